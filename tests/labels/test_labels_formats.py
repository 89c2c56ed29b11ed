"""Label file formats: text, csv, json, yaml (taxonomy-csv has its own file); detection; inline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zsindex.errors import InvalidInputError
from zsindex.labels import detect_format, parse_inline, parse_labels_file, parse_labels_text


def _err(fn, *args, **kwargs) -> str:
    with pytest.raises(InvalidInputError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# text -------------------------------------------------------------------------------------------


def test_text_comments_blanks_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "pets.txt"
    path.write_text("\ufeff# pets\n\n  dog \r\ncat\n\t# indented comment\nC# programmer\n", "utf-8")
    spec = parse_labels_file(path)
    assert spec.names == ("dog", "cat", "C# programmer")
    assert list(spec.lines or ()) == [3, 4, 6]
    assert spec.source == str(path)
    assert not spec.is_tree and spec.depth == 1 and spec.templates is None


def test_text_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("# header\ndog\n\ncat\ndog\n", "utf-8")
    assert _err(parse_labels_file, path).startswith(f"{path}, line 5: duplicate label 'dog'")


def test_other_line_breaks_are_not_silently_split() -> None:
    # str.splitlines() would split on \x1c or \u2028; they must be reported instead.
    message = _err(parse_labels_text, "a\nb\x1cc\n", "text", "f.txt")
    assert "line 2" in message and "U+001C" in message


def test_unreadable_files(tmp_path: Path) -> None:
    assert "no such file" in _err(parse_labels_file, tmp_path / "missing.txt")
    assert "is a directory" in _err(parse_labels_file, tmp_path)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok\ncaf\xe9\n")
    message = _err(parse_labels_file, latin)
    assert message.startswith(f"{latin}, line 2: not valid UTF-8")


def test_unknown_format() -> None:
    assert "unknown label format 'xml'" in _err(parse_labels_text, "a", "xml", "f")


# csv --------------------------------------------------------------------------------------------


def test_csv_flat_with_prompts_merged_cupl_style() -> None:
    content = (
        'label,prompt\ndog,a photo of a dog.\ncat,\ndog,"a dog, the pet."\nbird,a small bird\n'
    )
    spec = parse_labels_text(content, "csv", "p.csv")
    assert spec.names == ("dog", "cat", "bird")
    assert spec.prompts == (("a photo of a dog.", "a dog, the pet."), None, ("a small bird",))
    assert spec.prompt_texts_for(0) == ("a photo of a dog.", "a dog, the pet.")
    assert spec.prompt_texts_for(1) == ("a photo of a cat.",)  # default template
    assert list(spec.lines or ()) == [2, 3, 5]


def test_csv_tree_parent_after_child_and_name_alias() -> None:
    content = "Name,Parent\ncorax,Corvus\nCorvus,Aves\nAves,\n"
    spec = parse_labels_text(content, "csv", "t.csv")
    assert spec.names == ("corax", "Corvus", "Aves")
    assert spec.parents == (1, 2, None)
    assert spec.topological_order() == (2, 1, 0)
    assert spec.depth == 3 and spec.leaves() == (0,)


def test_csv_all_columns_any_order() -> None:
    content = "parent,label,prompt\n,animal,\nanimal,dog,a dog\nanimal,dog,a hound\n"
    spec = parse_labels_text(content, "csv", "t.csv")
    assert spec.names == ("animal", "dog")
    assert spec.parents == (None, 0)
    assert spec.prompts == (None, ("a dog", "a hound"))


@pytest.mark.parametrize(
    "content, expected",
    [
        ("dog\ncat\n", "unknown column 'dog'"),
        ("prompt\nx\n", "no 'label' column"),
        ("label,label\nx,y\n", "appears twice"),
        ("label\na,b\n", "line 2: 2 cells but the header has 1 columns"),
        ("", "empty file"),
        ('label\n"unterminated\n', "c.csv"),
    ],
)
def test_csv_errors(content: str, expected: str) -> None:
    assert expected in _err(parse_labels_text, content, "csv", "c.csv")


def test_csv_ambiguous_parent() -> None:
    content = "label,parent\nA,\nB,\nx,A\nx,B\nchild,x\n"
    assert "line 6: parent 'x' is ambiguous" in _err(parse_labels_text, content, "csv", "c.csv")


def test_csv_blank_label_names_line() -> None:
    assert _err(parse_labels_text, "label,prompt\n ,a prompt\n", "csv", "c.csv").startswith(
        "c.csv, line 2: label is blank"
    )


# json / yaml ------------------------------------------------------------------------------------


def test_json_flat_list(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    path.write_text(json.dumps(["dog", "cat"]), "utf-8")
    assert parse_labels_file(path).names == ("dog", "cat")


def test_json_cupl_mapping() -> None:
    spec = parse_labels_text('{"dog": ["a dog.", "a pup."], "cat": []}', "json", "c.json")
    assert spec.names == ("dog", "cat")
    assert spec.prompts == (("a dog.", "a pup."), None)


def test_json_nested_tree_unbalanced_and_repeated_names() -> None:
    doc = {
        "Aves": {"Corvus": ["corax", "cornix"], "Pica": None},
        "Mammalia": {"Canis": {"lupus": None}, "Vulpes": ["corax"]},  # corax again, elsewhere
        "Fungi": None,
    }
    spec = parse_labels_text(json.dumps(doc), "json", "t.json")
    assert spec.names == (
        "Aves", "Corvus", "corax", "cornix", "Pica",
        "Mammalia", "Canis", "lupus", "Vulpes", "corax", "Fungi",
    )  # fmt: skip
    assert spec.parents == (None, 0, 1, 1, 0, None, 5, 6, 5, 8, None)
    assert spec.node_depths == (0, 1, 2, 2, 1, 0, 1, 2, 1, 2, 0)
    assert spec.depth == 3
    assert spec.leaves() == (2, 3, 4, 7, 9, 10)
    assert spec.children[0] == (1, 4)
    assert spec.roots() == (0, 5, 10)


def test_json_list_of_node_objects() -> None:
    doc = [
        {"name": "animal", "children": [
            "cat",
            {"name": "dog", "prompts": ["a good dog"], "rank": "species"},
        ]},
        {"name": "plant", "text": "a green plant"},
    ]  # fmt: skip
    spec = parse_labels_text(json.dumps(doc), "json", "n.json")
    assert spec.names == ("animal", "cat", "dog", "plant")
    assert spec.parents == (None, 0, 0, None)
    assert spec.prompt_texts_for(2) == ("a good dog",)
    assert spec.prompt_texts_for(3) == ("a photo of a a green plant.",)
    assert spec.rank_of(2) == "species"
    assert spec.labels[2].rank == "species" and spec.labels[3].text == "a green plant"


def test_json_single_child_chain() -> None:
    spec = parse_labels_text('{"a": {"b": {"c": {"d": null}}}}', "json", "c.json")
    assert spec.parents == (None, 0, 1, 2) and spec.depth == 4 and spec.leaves() == (3,)
    assert spec.path(3) == (0, 1, 2, 3)


def test_json_envelope_with_templates_and_parents() -> None:
    doc = {
        "labels": ["corax", "cornix", "Corvus", "Aves"],
        "parents": {"corax": "Corvus", "cornix": "Corvus", "Corvus": "Aves"},
        "templates": ["a photo of a {c}, a bird."],
        "rank_names": ["class", "genus", "species"],
    }
    spec = parse_labels_text(json.dumps(doc), "json", "e.json")
    assert spec.names == ("corax", "cornix", "Corvus", "Aves")
    assert spec.parents == (2, 2, 3, None)
    assert spec.rank_of(0) == "species" and spec.rank_of(3) == "class"
    assert spec.prompt_texts_for(0) == ("a photo of a corax, a bird.",)


def test_json_envelope_template_set_name() -> None:
    spec = parse_labels_text('{"labels": ["a"], "templates": "simple-7"}', "json", "e.json")
    assert spec.templates is not None and len(spec.templates) == 7


@pytest.mark.parametrize(
    "content, expected",
    [
        ("[1, 2]", "item 1: label must be a string, not int"),
        ('"dog"', "expected a list of labels or an object"),
        ('{"a": 1, "b": {"c": null}}', "children must be a mapping, a list or null"),
        ('[{"label": "x"}]', "node object has"),
        ('{"dog": ["x"], "dog": ["y"]}', "duplicate key 'dog'"),
        ('["a",\n  oops]', "e.json, line 2: not valid JSON"),
        ('[{"name": "a", "children": [3]}]', "label must be a string, not int"),
        ('{"labels": {"a": {"b": null}}, "parents": {"a": "b"}}', "'parents' and 'prompts'"),
        ('{"a": {"b": {"b": null, "B": null}}}', "duplicate label 'B'"),
    ],
)
def test_json_errors(content: str, expected: str) -> None:
    message = _err(parse_labels_text, content, "json", "e.json")
    assert expected in message and "e.json" in message


def test_json_deep_nesting_is_a_clean_error() -> None:
    deep = '{"a":' * 5000 + "null" + "}" * 5000
    assert "e.json" in _err(parse_labels_text, deep, "json", "e.json")


def test_yaml_forms(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Aves:\n  Corvus: [corax, cornix]\n  Pica:\nMammalia:\n  Canis:\n", "utf-8")
    spec = parse_labels_file(path)
    assert spec.names == ("Aves", "Corvus", "corax", "cornix", "Pica", "Mammalia", "Canis")
    flat = parse_labels_text("- dog\n- cat\n", "yaml", "f.yml")
    assert flat.names == ("dog", "cat")
    cupl = parse_labels_text("dog: [a dog, a pup]\ncat: []\n", "yaml", "c.yml")
    assert cupl.prompts == (("a dog", "a pup"), None)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("- dog\n- 3\n", "item 2: label must be a string, not int (quote it in YAML)"),
        ("a:\n  b: 1\n", "children must be a mapping"),
        ("dog: [x]\ndog: [y]\n", "y.yaml, line 2: duplicate key 'dog'"),
        ("- [unclosed\n", "not valid YAML"),
        ("!!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_yaml_errors(content: str, expected: str) -> None:
    assert expected in _err(parse_labels_text, content, "yaml", "y.yaml")


# detection and inline ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, fmt",
    [
        ("a.txt", "dog", "text"),
        ("a.json", "[]", "json"),
        ("a.yaml", "- a", "yaml"),
        ("a.YML", "- a", "yaml"),
        ("a.csv", "label,prompt\n", "csv"),
        ("a.csv", "Name,parent\n", "csv"),
        ("a.csv", "\n\nkingdom,phylum,species\n", "taxonomy-csv"),
        ("labels", '  ["a"]', "json"),
        ("labels.lst", "a", "text"),
        ("noext", "dog\ncat", "text"),
    ],
)
def test_detect_format(name: str, content: str, fmt: str) -> None:
    assert detect_format(name, content) == fmt


def test_format_forced(tmp_path: Path) -> None:
    path = tmp_path / "labels.data"
    path.write_text("label\ndog\n", "utf-8")
    assert parse_labels_file(path).names == ("label", "dog")  # detected as text
    assert parse_labels_file(path, format="csv").names == ("dog",)


def test_parse_inline() -> None:
    spec = parse_inline(" dog, cat ,bird,")
    assert spec.names == ("dog", "cat", "bird") and spec.source == "--labels"
    assert "duplicate label" in _err(parse_inline, "dog,Dog")
    assert parse_inline("dog,Dog", allow_duplicates=True).names == ("dog", "Dog")
    assert "item 1 is empty" in _err(parse_inline, "")
