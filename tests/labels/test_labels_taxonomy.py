"""taxonomy-csv label files and names files for ``labels import`` (text, JSON, CSV, TreeOfLife)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from zsindex.errors import InvalidInputError
from zsindex.labels import parse_labels_file, parse_labels_text, parse_names_file, parse_names_text

TAXO = """kingdom,phylum,class,order,family,genus,species
Animalia,Chordata,Aves,Passeriformes,Corvidae,Corvus,corax
Animalia,Chordata,Aves,Passeriformes,Corvidae,Corvus,cornix
Animalia,Chordata,Aves,Passeriformes,Motacillidae,Motacilla,alba
Animalia,Chordata,Mammalia,Carnivora,Canidae,Canis,
Plantae,Tracheophyta,,,,,
Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica, pica
"""


def _err(fn, *args, **kwargs) -> str:
    with pytest.raises(InvalidInputError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_taxonomy_csv_tree_shape(tmp_path: Path) -> None:
    path = tmp_path / "taxa.csv"
    path.write_text(TAXO, "utf-8")
    spec = parse_labels_file(path)  # detected: the header names ranks
    assert spec.rank_names == ("kingdom", "phylum", "class", "order", "family", "genus", "species")
    names = spec.names
    assert names[:7] == (
        "Animalia",
        "Chordata",
        "Aves",
        "Passeriformes",
        "Corvidae",
        "Corvus",
        "corax",
    )
    assert names.count("Animalia") == 1 and names.count("Chordata") == 1
    # one node per distinct path prefix; unbalanced depths (Canis at genus, Tracheophyta at phylum)
    canis = names.index("Canis")
    assert spec.node_depths[canis] == 5 and spec.rank_of(canis) == "genus"
    trach = names.index("Tracheophyta")
    assert spec.node_depths[trach] == 1 and spec.rank_of(trach) == "phylum"
    assert spec.depth == 7
    pica = names.index("pica")  # stripped cell
    assert spec.rank_of(pica) == "species"
    assert [names[i] for i in spec.path(pica)][-3:] == ["Corvidae", "Pica", "pica"]
    assert list(spec.lines or ())[names.index("cornix")] == 3
    assert set(spec.leaves()) == {
        names.index(n) for n in ("corax", "cornix", "alba", "Canis", "Tracheophyta", "pica")
    }
    assert spec.texts is None and spec.prompt_texts_for(pica) == ("a photo of a pica.",)


def test_taxonomy_node_text_path() -> None:
    spec = parse_labels_text(TAXO, "taxonomy-csv", "t.csv", node_text="path")
    corax = spec.names.index("corax")
    assert spec.names[corax] == "corax"  # results show the node's own name
    assert spec.text_of(corax) == "Animalia Chordata Aves Passeriformes Corvidae Corvus corax"
    assert spec.prompt_texts_for(corax, ["{}"]) == (spec.text_of(corax),)
    assert spec.text_of(0) == "Animalia"
    assert spec.labels[corax].text == spec.text_of(corax)
    name_spec = parse_labels_text(TAXO, "taxonomy-csv", "t.csv")
    assert spec.digest("m") != name_spec.digest("m")


def test_taxonomy_same_name_under_different_parents_is_distinct() -> None:
    content = "genus,species\nCorvus,alba\nMotacilla,alba\nTyto,alba\n"
    spec = parse_labels_text(content, "taxonomy-csv", "t.csv")
    albas = [i for i, n in enumerate(spec.names) if n == "alba"]
    assert len(albas) == 3 and len({spec.parents[i] for i in albas}) == 3  # type: ignore[index]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("a,b,c\nx,,z\n", "t.csv, line 2: column 2 (b) is empty but a later column is not"),
        ("a,b\nx,y,z\n", "t.csv, line 2: 3 cells but the header has 2 ranks"),
        ("a,,c\nx,y,z\n", "header column 2 is empty"),
        ("genus,Genus\nx,y\n", "repeats the rank"),
        ("a,b\nx,y\nq,r\nx,y\n", "t.csv, line 4: duplicate path 'x > y' (same as t.csv, line 2)"),
        ("", "empty file"),
        ("a,b\n", "no labels"),
        ("a,b\nx,y\x01\n", "t.csv, line 2: label 'y\\x01' contains a control character"),
    ],
)
def test_taxonomy_errors(content: str, expected: str) -> None:
    assert expected in _err(parse_labels_text, content, "taxonomy-csv", "t.csv")


def test_taxonomy_duplicate_rows_allowed_become_distinct_nodes() -> None:
    content = "a,b,c\nx,y,\nx,y,\nx,y,z\n"
    spec = parse_labels_text(content, "taxonomy-csv", "t.csv", allow_duplicates=True)
    assert spec.names == ("x", "y", "y", "z")
    assert spec.parents == (None, 0, 0, 1)  # later rows descend the first 'y'


def test_taxonomy_100k_rows_fast() -> None:
    rows = ["kingdom,phylum,class,order,family,genus,species"]
    for i in range(100_000):
        f = i // 30
        rows.append(f"Animalia,P{f // 400},C{f // 100},O{f // 20},F{f},G{f}_{i // 5 % 6},sp{i}")
    content = "\n".join(rows)
    start = time.process_time()
    spec = parse_labels_text(content, "taxonomy-csv", "big.csv")
    elapsed = time.process_time() - start
    assert len(spec.leaves()) == 100_000
    assert elapsed < 3.0  # ~0.4 s on an idle 2-core machine; generous for loaded CI


# names files ------------------------------------------------------------------------------------


def test_names_text_every_line_is_a_row(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("dog\r\ncat\n# not a comment\n", "utf-8")
    parsed = parse_names_file(path)
    assert parsed.spec.names == ("dog", "cat", "# not a comment")
    assert list(parsed.row_nodes) == [0, 1, 2] and parsed.kind == "names" and parsed.num_rows == 3
    path.write_text("dog\n\ncat\n", "utf-8")
    assert _err(parse_names_file, path).startswith(f"{path}, line 2: label is blank")


def test_names_json_list_and_tree(tmp_path: Path) -> None:
    flat = tmp_path / "n.json"
    flat.write_text(json.dumps(["a", "b"]), "utf-8")
    assert parse_names_file(flat).spec.names == ("a", "b")
    tree = [
        {"name": "corax", "parent": "Corvus"},
        {"name": "Corvus", "parent": None},
        {"name": "alba", "parent": 3},
        {"name": "Motacilla", "parent": None},
    ]
    flat.write_text(json.dumps(tree), "utf-8")
    parsed = parse_names_file(flat)
    assert parsed.kind == "tree" and parsed.spec.parents == (1, None, 3, None)
    assert list(parsed.row_nodes) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "doc, expected",
    [
        ([{"name": "a", "parent": "zz"}], "n.json: item 1: parent 'zz' is not a name"),
        ([{"name": "a", "parent": 5}], "parent row 5 does not exist"),
        (
            [{"name": "a"}, {"name": "b", "parent": "a", "extra": 1}],
            "n.json: item 2: expected an object",
        ),
        ([{"name": "a", "parent": "b"}, {"name": "b", "parent": "a"}], "cycle"),
        ([{"name": "x"}, {"name": "x"}, {"name": "c", "parent": "x"}], "ambiguous"),
        ({"a": 1}, "expected a non-empty JSON list"),
        ([], "expected a non-empty JSON list"),
        (["a", 3], "label 2: label must be a string, not int"),
        ([{"name": 3}], "name must be a string"),
    ],
)
def test_names_json_errors(doc: object, expected: str) -> None:
    assert expected in _err(parse_names_text, json.dumps(doc), "json", "n.json")


def test_names_csv(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("name,parent\nAves,\ncorax,Corvus\nCorvus,Aves\n", "utf-8")
    parsed = parse_names_file(path)
    assert parsed.spec.names == ("Aves", "corax", "Corvus")
    assert parsed.spec.parents == (None, 2, 0) and parsed.kind == "tree"
    path.write_text("name,parent\nAves,\ncorax,Corvs\n", "utf-8")
    assert _err(parse_names_file, path).startswith(f"{path}, line 3: parent 'Corvs' is not a name")
    path.write_text("label\nx\n", "utf-8")
    assert "header must be 'name,parent'" in _err(parse_names_file, path)
    path.write_text("name\nx\ny\n", "utf-8")
    assert parse_names_file(path).spec.parents is None


def test_names_treeoflife() -> None:
    rows = [
        [
            ["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"],
            "Common Raven",
        ],
        [
            ["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "cornix"],
            "Hooded Crow",
        ],
        [
            ["Animalia", "Chordata", "Aves", "Passeriformes", "Motacillidae", "Motacilla", "alba"],
            "",
        ],
        [["Animalia", "Chordata", "Mammalia", "Carnivora", "Canidae", "Canis", ""], "dogs"],
    ]
    parsed = parse_names_text(json.dumps(rows), "json", "tol.json")
    spec = parsed.spec
    assert parsed.kind == "treeoflife" and parsed.num_rows == 4
    assert [spec.names[n] for n in parsed.row_nodes] == ["corax", "cornix", "alba", "Canis"]
    assert spec.rank_names[-1] == "species"
    corax = parsed.row_nodes[0]
    assert [spec.names[i] for i in spec.path(corax)] == list(rows[0][0])
    assert spec.rank_of(parsed.row_nodes[3]) == "genus"
    assert spec.names.count("Animalia") == 1 and len(spec) == 15
    assert spec.labels[corax].meta == {"common_name": "Common Raven"}
    assert spec.labels[parsed.row_nodes[2]].meta is None


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([[["A", "B"], "x"], ["A", "x"]], "tol.json: row 2: expected"),
        ([[["A", 3], "x"]], "row 1: expected"),
        ([[["A", "", "C"], "x"]], "row 1: column 2 (phylum) is empty"),
        (
            [[["A", "B"], "x"], [["A", "B"], "y"]],
            "row 2: duplicate path 'A > B' (same as tol.json: row 1)",
        ),
        ([[[], "x"]], "row 1: expected"),
        ([[["a", "b", "c", "d", "e", "f", "g", "h"], None]], "at most 7 rank strings"),
    ],
)
def test_names_treeoflife_errors(rows: object, expected: str) -> None:
    assert expected in _err(parse_names_text, json.dumps(rows), "json", "tol.json")


def test_names_treeoflife_duplicates_allowed_keep_one_row_per_node() -> None:
    rows = [[["A", "B"], "x"], [["A", "B"], "y"]]
    parsed = parse_names_text(json.dumps(rows), "json", "tol.json", allow_duplicates=True)
    assert len(set(parsed.row_nodes)) == 2


def test_names_detection(tmp_path: Path) -> None:
    path = tmp_path / "names"
    path.write_text('["a", "b"]', "utf-8")
    assert parse_names_file(path).spec.names == ("a", "b")
    path.write_text("a\nb\n", "utf-8")
    assert parse_names_file(path).spec.names == ("a", "b")
    assert "unknown names format" in _err(parse_names_text, "a", "yaml", "x")


def test_names_million_rows_fast() -> None:
    content = "\n".join(f"name {i}" for i in range(1_000_000))
    start = time.process_time()
    parsed = parse_names_text(content, "text", "big.txt")
    assert parsed.num_rows == 1_000_000
    assert time.process_time() - start < 10.0  # ~1 s on an idle machine
