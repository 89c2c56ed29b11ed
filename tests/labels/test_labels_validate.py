"""I6: label input validation — empty, duplicates, control characters, long labels, big sets,
label-set names, cycles, missing parents. Every failure is one line naming where and why."""

from __future__ import annotations

import time
import unicodedata

import pytest

from zsindex.errors import InvalidInputError
from zsindex.labels import (
    LabelSetSpec,
    Limits,
    build_labelset,
    parse_inline,
    parse_labels_text,
    validate_labelset_name,
    validate_spec,
)


def _err(fn, *args, **kwargs) -> str:
    with pytest.raises(InvalidInputError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# Empty ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n", "   \n\t\n"])
def test_empty_text_file_is_an_error(content: str) -> None:
    message = _err(parse_labels_text, content, "text", "labels.txt")
    assert "labels.txt" in message and "no labels" in message


def test_empty_list_and_mapping_are_errors() -> None:
    assert "no labels" in _err(build_labelset, [])
    assert "no labels" in _err(build_labelset, {})
    assert "no labels" in _err(parse_labels_text, "[]", "json", "l.json")
    assert "no labels" in _err(parse_labels_text, "label\n", "csv", "l.csv")


# Duplicates -------------------------------------------------------------------------------------


def test_exact_duplicate_names_both_lines() -> None:
    message = _err(parse_labels_text, "dog\ncat\ndog\n", "text", "pets.txt")
    assert message.startswith("pets.txt, line 3: duplicate label 'dog'")
    assert "line 1" in message and "--allow-duplicates" in message


def test_case_folding_duplicates() -> None:
    message = _err(parse_labels_text, "Straße\nSTRASSE\n", "text", "x.txt")
    assert "line 2" in message and "line 1" in message and "case-folding" in message


def test_nfc_duplicates() -> None:
    composed = unicodedata.normalize("NFC", "café")
    decomposed = unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    message = _err(build_labelset, [composed, decomposed])
    assert "label 2" in message and "label 1" in message


def test_whitespace_variants_are_duplicates() -> None:
    assert "duplicate" in _err(build_labelset, ["golden  retriever", "golden retriever "])


def test_duplicates_allowed_keep_positions() -> None:
    spec = parse_labels_text("dog\nDog\ndog\n", "text", "x.txt", allow_duplicates=True)
    assert spec.names == ("dog", "Dog", "dog")
    assert spec.allow_duplicates


def test_duplicates_only_within_the_same_parent() -> None:
    spec = build_labelset(["A", "B", "x", "X2"], parents={"x": "A", "X2": "B"})
    assert spec.is_tree
    content = "kingdom,genus,species\nK,Corvus,alba\nK,Motacilla,alba\n"
    tree = parse_labels_text(content, "taxonomy-csv", "t.csv")
    assert [tree.names[i] for i in tree.leaves()] == ["alba", "alba"]
    message = _err(
        parse_labels_text, "kingdom,genus\nK,Corvus\nK,CORVUS\n", "taxonomy-csv", "t.csv"
    )
    assert "t.csv, line 3" in message and "same parent" in message


# Blank and control characters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, code",
    [
        ("a\x00b", "U+0000"),
        ("tab\there", "U+0009"),
        ("bell\x07", "U+0007"),
        ("x\u2028y", "U+2028"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
    ],
)
def test_control_characters_are_errors(bad: str, code: str) -> None:
    message = _err(build_labelset, ["fine", bad])
    assert "label 2" in message and code in message


def test_control_character_in_file_names_the_line() -> None:
    message = _err(parse_labels_text, "ok\nbad\x0bvalue\n", "text", "f.txt")
    assert message.startswith("f.txt, line 2:") and "U+000B" in message


def test_blank_labels_are_errors() -> None:
    assert "label 2: label is blank" in _err(build_labelset, ["a", "   "])
    assert "label 1: label is blank" in _err(build_labelset, [""])
    assert "item 2 is empty" in _err(parse_inline, "a,,b")


def test_lone_surrogate_is_an_error() -> None:
    assert "U+D800" in _err(build_labelset, ["ok", "bad\ud800"])


def test_unicode_labels_are_fine() -> None:
    spec = build_labelset(["猫", "Äpfel", "😀 smile", "naïve café"])
    assert len(spec) == 4


# Lengths and counts -----------------------------------------------------------------------------


def test_10k_char_label_is_a_clean_error() -> None:
    message = _err(parse_labels_text, "short\n" + "x" * 10_000 + "\n", "text", "long.txt")
    assert message.startswith("long.txt, line 2: label is 10,000 characters long (limit 1,000)")
    assert len(message) < 200  # the label itself is not echoed


def test_label_at_the_limit_is_accepted() -> None:
    assert len(build_labelset(["x" * 1000]).names[0]) == 1000
    assert build_labelset(["y" * 10_000], limits=Limits(max_label_length=10_000))


def test_long_prompt_is_an_error() -> None:
    message = _err(build_labelset, {"dog": ["a dog", "p" * 5000]})
    assert "prompt is 5,000 characters" in message


def test_100k_labels_are_fast() -> None:
    content = "\n".join(f"label {i}" for i in range(100_000))
    start = time.perf_counter()
    spec = parse_labels_text(content, "text", "big.txt")
    assert len(spec) == 100_000
    assert time.perf_counter() - start < 3.0  # typically ~0.1 s


def test_max_labels() -> None:
    message = _err(build_labelset, ["a", "b", "c"], limits=Limits(max_labels=2))
    assert "3 labels is more than the limit of 2" in message
    message = _err(parse_labels_text, "a\nb\nc\n", "text", "f.txt", limits=Limits(max_labels=2))
    assert "f.txt" in message and "limit of 2" in message


def test_wrong_types() -> None:
    assert "not a string" in _err(build_labelset, "a,b,c")
    assert "labels: item 2 must be a string, not int" in _err(build_labelset, ["a", 3])
    assert "must be a list of strings" in _err(build_labelset, 5)
    assert "templates: item 1: template must be a string" in _err(
        build_labelset, ["a"], templates=[1]
    )


# Label-set names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pets", "a", "imagenet1k", "my-set_v2.1", "0", "x" * 64])
def test_valid_labelset_names(name: str) -> None:
    assert validate_labelset_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../etc",
        "..",
        "a/b",
        "a\\b",
        "/abs",
        ".hidden",
        "-dash",
        "_u",
        "a..b",
        "UPPER",
        "sp ace",
        "x" * 65,
        "nul\x00",
        "é",
        "a:b",
    ],
)
def test_invalid_labelset_names(name: str) -> None:
    message = _err(validate_labelset_name, name)
    assert "invalid label set name" in message


def test_labelset_name_hints_lowercase_and_type() -> None:
    assert "lowercase" in _err(validate_labelset_name, "Pets")
    assert "must be a string" in _err(validate_labelset_name, 3)


# Trees: cycles and missing parents -------------------------------------------------------------


def test_cycle_through_parents_mapping() -> None:
    message = _err(build_labelset, ["a", "b", "c"], parents={"a": "b", "b": "c", "c": "a"})
    assert "cycle" in message and "'a'" in message


def test_self_parent_is_a_cycle() -> None:
    assert "cycle" in _err(build_labelset, ["a"], parents={"a": "a"})


def test_cycle_in_csv_names_lines() -> None:
    content = "label,parent\nroot,\na,b\nb,a\n"
    message = _err(parse_labels_text, content, "csv", "tree.csv")
    assert "tree.csv" in message and "cycle" in message and "line 3" in message


def test_missing_parent_in_csv_names_the_line() -> None:
    content = "label,parent\nAves,\nCorvus,Aves\ncorax,Corvs\n"
    message = _err(parse_labels_text, content, "csv", "tree.csv")
    assert message.startswith("tree.csv, line 4: parent 'Corvs' is not a label")


def test_parents_mapping_key_not_a_label() -> None:
    message = _err(build_labelset, ["a"], parents={"b": None})
    assert "parents: 'b' is not a label" in message


def test_parents_mapping_non_string_parent() -> None:
    assert "must be a string or null" in _err(build_labelset, ["a", "b"], parents={"a": 1})


def test_hand_built_spec_with_bad_parent_index() -> None:
    spec = LabelSetSpec(names=("a", "b"), parents=(None, 7))
    assert "parent 7 is not the index of a node" in _err(validate_spec, spec)
    looped = LabelSetSpec(names=("a", "b", "c"), parents=(2, 0, 1))
    assert "cycle" in _err(validate_spec, looped)


def test_column_lengths_must_match() -> None:
    assert "parents has 1 entries for 2 labels" in _err(
        LabelSetSpec, names=("a", "b"), parents=(None,)
    )


def test_labels_may_contain_slashes_and_dots() -> None:
    # Only label-set NAMES are restricted; labels are data and never used as paths.
    spec = parse_labels_text("AC/DC\n../etc/passwd\n..\n", "text", "f.txt")
    assert spec.names == ("AC/DC", "../etc/passwd", "..")
