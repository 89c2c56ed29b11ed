"""LabelSetSpec: constructors, tree views, prompts, digest; build_labelset for API input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zsindex.errors import InvalidInputError
from zsindex.labels import DEFAULT_TEMPLATES, LabelNode, LabelSetSpec, build_labelset


def test_flat_spec_views() -> None:
    spec = LabelSetSpec.from_labels(["dog", "cat"], templates=["a {}."])
    assert len(spec) == 2 and not spec.is_tree and spec.depth == 1
    assert spec.roots() == spec.leaves() == (0, 1)
    assert spec.children == ((), ())
    assert spec.labels == (LabelNode("dog"), LabelNode("cat"))
    assert spec.prompt_texts_for(1) == ("a cat.",)
    assert spec.prompt_texts_for(1, ["x {c} y", "{}!"]) == ("x cat y", "cat!")
    assert spec.where(1) == "labels: label 2"  # 1-based, as editors count


def test_default_templates_and_override_order() -> None:
    spec = LabelSetSpec.from_labels(["dog"])
    assert spec.templates is None
    assert spec.effective_templates() == DEFAULT_TEMPLATES == ("a photo of a {}.",)
    plugin = LabelSetSpec.from_labels(["dog"], templates=["plugin {}"])
    assert plugin.effective_templates() == ("plugin {}",)
    assert plugin.effective_templates(["user {}"]) == ("user {}",)
    assert plugin.with_templates(None) is plugin
    assert plugin.with_templates(["user {}"]).templates == ("user {}",)


def test_from_parents_keeps_the_label_order() -> None:
    spec = LabelSetSpec.from_parents(
        ["corax", "cornix", "lupus", "Corvus", "Aves"],
        {"corax": "Corvus", "cornix": "Corvus", "Corvus": "Aves", "lupus": None},
    )
    # the labels' order, a parent after its children included
    assert spec.names == ("corax", "cornix", "lupus", "Corvus", "Aves")
    assert spec.parents == (3, 3, None, 4, None)
    assert spec.topological_order() == (2, 4, 3, 0, 1)
    assert spec.node_depths == (2, 2, 0, 1, 0) and spec.depth == 3
    assert spec.children[3] == (0, 1) and spec.leaves() == (0, 1, 2)
    assert spec.path(0) == (4, 3, 0)
    assert spec.labels[0].parent == 3


def test_build_labelset_tree_and_prompts() -> None:
    spec = build_labelset(
        ["dog", "cat", "animal"],
        parents={"dog": "animal", "cat": "animal"},
        prompts={"dog": ["a good dog"]},
        templates=["a {}."],
        rank_names=["kind", "species"],
    )
    assert spec.parents == (2, 2, None)
    assert spec.prompt_texts_for(0) == ("a good dog",)
    assert spec.prompt_texts_for(1) == ("a cat.",)
    assert spec.rank_of(0) == "species" and spec.rank_of(2) == "kind"
    assert spec.labels[2].rank == "kind"


def test_build_labelset_cupl_and_template_set_name() -> None:
    spec = build_labelset({"dog": ["a dog", "a pup"], "cat": None}, templates="simple-7")
    assert spec.prompts == (("a dog", "a pup"), None)
    assert spec.templates is not None and len(spec.templates) == 7
    assert len(spec.prompt_texts_for(1)) == 7


def test_build_labelset_errors() -> None:
    with pytest.raises(InvalidInputError, match="ambiguous"):
        build_labelset(["x", "x", "y"], parents={"y": "x"}, allow_duplicates=True)
    with pytest.raises(InvalidInputError, match="prompts: 'zebra' is not a label"):
        build_labelset(["dog"], prompts={"zebra": ["z"]})
    with pytest.raises(InvalidInputError, match="must be an object"):
        build_labelset(["dog"], parents=["dog"])
    with pytest.raises(InvalidInputError, match="unknown template set"):
        build_labelset(["dog"], templates="/etc/passwd")  # never a server path


def test_duplicates_with_parents_share_the_parent() -> None:
    spec = build_labelset(["a", "a", "p"], parents={"a": "p"}, allow_duplicates=True)
    assert spec.parents == (2, 2, None)


def test_from_nodes_roundtrip() -> None:
    nodes = [
        LabelNode("root"),
        LabelNode("leaf", prompts=("p",), parent=0, rank="r", meta={"k": 1}, text="t"),
    ]
    spec = LabelSetSpec.from_nodes(nodes)
    assert spec.labels == tuple(nodes)
    assert spec.node_meta == {"k": (None, 1)}


def test_digest_is_deterministic_and_content_sensitive() -> None:
    base = build_labelset(["dog", "cat"])
    same = build_labelset(["dog", "cat"], templates=list(DEFAULT_TEMPLATES))
    assert base.digest("fp") == same.digest("fp")  # None templates = the default ones
    assert len(base.digest("fp")) == 64
    assert base.digest("fp") != base.digest("other-model")
    assert base.digest("fp") != build_labelset(["cat", "dog"]).digest("fp")
    assert base.digest("fp") != build_labelset(["dog", "cat"], templates=["{}"]).digest("fp")
    assert base.digest("fp") != build_labelset({"dog": ["d"], "cat": ["c"]}).digest("fp")
    tree = build_labelset(["dog", "cat"], parents={"dog": "cat"})
    assert base.digest("fp") != tree.digest("fp")
    # source and lines do not matter
    assert base.digest("fp") == build_labelset(["dog", "cat"], source="x").digest("fp")
    code = (
        "from zsindex.labels import build_labelset;"
        "print(build_labelset(['dog', 'cat']).digest('fp'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123"},
    )  # fmt: skip
    assert out.stdout.strip() == base.digest("fp")


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, zsindex.labels;"
        "from zsindex.labels import load_plugin;"
        "s = load_plugin('imagenet1k');"
        "assert len(s) == 1000;"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
