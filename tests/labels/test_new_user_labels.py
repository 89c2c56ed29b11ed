"""What a new user hits in label files and label structures (issue 20), pinned one by one."""

from __future__ import annotations

import json

import pytest

from zsindex.errors import InvalidInputError
from zsindex.labels import build_labelset, load_plugin, parse_labels_text, parse_names_text
from zsindex.labels.plugins import plugin_result_to_spec
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.templates import check_template, parse_templates_text


def _err(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(InvalidInputError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    message = info.value.message
    assert "\n" not in message
    return message


# -- a parent must name a label of the set ---------------------------------------------------------

SHAPES = ["circle", "red circle", "blue circle"]


def test_a_typo_in_parents_is_an_error_naming_child_and_parent() -> None:
    message = _err(
        build_labelset, SHAPES, parents={"red circle": "circle", "blue circle": "cirlce"}
    )
    assert "'blue circle'" in message and "'cirlce'" in message and "not a label" in message


def test_a_parent_outside_the_labels_is_refused_everywhere() -> None:
    with pytest.raises(InvalidInputError, match="'cirlce'"):
        LabelSetSpec.from_parents(SHAPES, {"blue circle": "cirlce"})
    doc = {"labels": SHAPES, "parents": {"blue circle": "cirlce"}}
    for fmt, text in (("json", json.dumps(doc)), ("yaml", json.dumps(doc))):
        assert "'cirlce'" in _err(parse_labels_text, text, fmt, f"l.{fmt}")
    assert "'cirlce'" in _err(plugin_result_to_spec, doc, "typo")
    # The CSV format always refused it; it still does.
    csv = "label,parent\ncircle,\nblue circle,cirlce\n"
    assert "line 3" in _err(parse_labels_text, csv, "csv", "l.csv")


def test_parents_naming_labels_still_build_the_tree() -> None:
    spec = build_labelset(SHAPES, parents={"red circle": "circle", "blue circle": "circle"})
    assert spec.parents == (None, 0, 0) and spec.names == tuple(SHAPES)


# -- tree node names cannot contain '/' (it separates --within paths) ------------------------------


@pytest.mark.parametrize(
    "content, fmt, where",
    [
        ("label,parent\nanimals/pets,\ndog,animals/pets\n", "csv", "t.csv, line 2"),
        ('{"animals/pets": {"dog": null}}', "json", "t.json"),
        ("kingdom,genus\nAnimalia,Canis/Vulpes\n", "taxonomy-csv", "t.csv, line 2"),
    ],
)
def test_tree_node_names_with_a_slash_are_refused(content: str, fmt: str, where: str) -> None:
    source = where.split(",")[0]
    message = _err(parse_labels_text, content, fmt, source)
    assert message.startswith(where) and "'/'" in message and "--within" in message


def test_slash_in_tree_names_refused_for_structures_and_imports() -> None:
    assert "'a/b'" in _err(build_labelset, ["a/b", "c"], parents={"c": "a/b"})
    names = '[{"name": "root", "parent": null}, {"name": "x/y", "parent": "root"}]'
    assert "'x/y'" in _err(parse_names_text, names, "json", "n.json")


def test_flat_sets_keep_slashes_and_builtin_trees_have_none() -> None:
    assert build_labelset(["baluster / handrail", "dog"]).names[0] == "baluster / handrail"
    assert any("/" in n for n in load_plugin("imagenet1k").names)  # flat: --within never applies
    for name in ("shape-tree",):
        spec = load_plugin(name)
        assert spec.is_tree and not any("/" in n for n in spec.names)


# -- messages that say what is wrong ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content, fmt",
    [
        ('label,parent\ncircle,\n"square,\n', "csv"),
        ('kingdom,genus\nAnimalia,"Canis\n', "taxonomy-csv"),
    ],
)
def test_an_unterminated_quote_is_reported_as_one(content: str, fmt: str) -> None:
    message = _err(parse_labels_text, content, fmt, "q.csv")
    assert message.startswith("q.csv, line 2") or message.startswith("q.csv, line 3")
    assert "quote" in message and "control character" not in message


def test_an_unterminated_quote_in_a_names_csv() -> None:
    message = _err(parse_names_text, 'name,parent\na,\n"b,a\n', "csv", "n.csv")
    assert message.startswith("n.csv, line 3") and "quote" in message


@pytest.mark.parametrize("content", ["", "   \n", "# just a comment\n", "null\n"])
def test_an_empty_yaml_file_says_it_is_empty(content: str) -> None:
    message = _err(parse_labels_text, content, "yaml", "e.yaml")
    assert "empty" in message and "NoneType" not in message


def test_an_empty_json_file_says_it_is_empty() -> None:
    for content in ("", "\n", "null"):
        message = _err(parse_labels_text, content, "json", "e.json")
        assert "empty" in message and "NoneType" not in message


@pytest.mark.parametrize(
    "content, fmt, expected",
    [
        ('["a", 1]', "json", "item 2"),
        ("- dog\n- 3\n", "yaml", "item 2"),
        ('[{"name": "a", "children": ["b", 5]}]', "json", "item 2"),
        ('{"labels": ["a", 3]}', "json", "item 2"),
        ('["a", "b", "a"]', "json", "label 3"),
    ],
)
def test_item_numbers_in_label_files_are_one_based(content: str, fmt: str, expected: str) -> None:
    message = _err(parse_labels_text, content, fmt, f"f.{fmt}")
    assert expected in message
    assert "item 0" not in message and "[0]" not in message and "[1]" not in message


def test_duplicate_in_a_json_list_names_both_one_based() -> None:
    message = _err(parse_labels_text, '["a", "b", "a"]', "json", "f.json")
    assert "label 3" in message and "label 1" in message


def test_names_file_items_are_one_based() -> None:
    message = _err(parse_names_text, '[{"name": "a", "parent": "zz"}]', "json", "n.json")
    assert "item 1" in message and "[0]" not in message
    tol = json.dumps([[["A", "B"], "x"], [["A", 3], "y"]])
    assert "row 2" in _err(parse_names_text, tol, "json", "tol.json")


def test_template_file_items_are_one_based() -> None:
    message = _err(parse_templates_text, '["a {}.", "no placeholder"]', "t.json")
    assert "item 2" in message and "[1]" not in message


@pytest.mark.parametrize("template", ["a photo of a {0}.", "a photo of a {label}."])
def test_a_numbered_or_named_field_says_to_use_braces(template: str) -> None:
    message = _err(check_template, template, "t.txt, line 1")
    assert "{}" in message and "{c}" in message and "found 1 field" not in message
    assert template.split("{")[1].split("}")[0] in message  # names the field it found


def test_template_placeholder_counts_are_explained() -> None:
    assert "no {} or {c}" in _err(check_template, "a photo", "t")
    assert "2 placeholders" in _err(check_template, "{} and {}", "t")
    assert "format spec" in _err(check_template, "a {:>10}", "t")


# -- ranks travel with the nodes of an exported names file -----------------------------------------


def test_names_json_ranks_rebuild_the_rank_names() -> None:
    rows = [
        {"name": "circle", "parent": None, "rank": "shape"},
        {"name": "red circle", "parent": "circle", "rank": "color"},
        {"name": "square", "parent": None, "rank": "shape"},
    ]
    spec = parse_names_text(json.dumps(rows), "json", "n.json").spec
    assert spec.rank_names == ("shape", "color")
    assert [spec.rank_of(i) for i in range(3)] == ["shape", "color", "shape"]
    assert "rank" in _err(parse_names_text, json.dumps([{"name": "a", "rank": 3}]), "json", "n")


def test_rank_names_by_depth_stop_where_the_nodes_disagree() -> None:
    doc = [
        {"name": "a", "rank": "group", "children": [{"name": "x", "rank": "size"}]},
        {"name": "b", "rank": "group", "children": [{"name": "y", "rank": "colour"}]},
    ]
    spec = parse_labels_text(json.dumps(doc), "json", "t.json")
    assert spec.rank_names == ("group",)  # depth 2 has two different ranks
    given = {"labels": doc, "rank_names": ["kind", "leaf"]}
    assert parse_labels_text(json.dumps(given), "json", "t.json").rank_names == ("kind", "leaf")
