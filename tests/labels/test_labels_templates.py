"""Template sets, template files, placeholder validation and filling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zsindex.errors import InvalidInputError
from zsindex.labels import TEMPLATE_SET_NAMES, fill_template, resolve_templates, validate_templates
from zsindex.labels.templates import CIFAR_TEMPLATES, parse_templates_text


def test_named_sets_match_open_clip() -> None:
    openai = resolve_templates("openai-imagenet-80")
    simple = resolve_templates("simple-7")
    assert len(openai) == 80 and len(simple) == 7
    assert openai[0] == "a bad photo of a {}."
    assert simple[0] == "itap of a {}."
    assert resolve_templates("photo") == ("a photo of a {}.",)
    assert len(CIFAR_TEMPLATES) == 18 and len(set(CIFAR_TEMPLATES)) == 18
    assert set(TEMPLATE_SET_NAMES) >= {"openai-imagenet-80", "simple-7", "photo", "cifar-18"}


def test_format_strings_equal_open_clip_lambdas() -> None:
    from zsindex.labels._openclip_meta import _metadata_module

    lambdas = _metadata_module().OPENAI_IMAGENET_TEMPLATES
    for template, fn in zip(resolve_templates("openai-imagenet-80"), lambdas, strict=True):
        assert fill_template(template, "tiger shark") == fn("tiger shark")
        assert template.format("x{y}") == fn("x{y}")  # open_clip's str.format path


def test_fill_both_placeholder_styles_and_escapes() -> None:
    assert fill_template("a photo of a {}.", "dog") == "a photo of a dog."
    assert fill_template("a photo of a {c}.", "dog") == "a photo of a dog."
    assert fill_template("{{set}} {}", "dog") == "{set} dog"
    assert fill_template("a {}", "{weird} label") == "a {weird} label"


@pytest.mark.parametrize(
    "template, expected",
    [
        ("no placeholder", "no {} or {c} placeholder"),
        ("{} and {}", "2 placeholders: use exactly one"),
        ("{0}", "uses the field {0}: write {} or {c}"),
        ("{label}", "uses the field {label}: write {} or {c}"),
        ("{c!r}", "format spec or conversion"),
        ("{:>10}", "format spec or conversion"),
        ("a { b {}", "not a valid format string"),
        ("a } {}", "not a valid format string"),
        ("tab\t{}", "U+0009"),
        ("x" * 1001 + "{}", "limit 1000"),
    ],
)
def test_bad_templates(template: str, expected: str) -> None:
    with pytest.raises(InvalidInputError, match="templates: item 2") as info:
        validate_templates(["fine {}", template])
    assert expected in str(info.value)


def test_validate_templates_shapes() -> None:
    with pytest.raises(InvalidInputError, match="no templates"):
        validate_templates([])
    with pytest.raises(InvalidInputError, match="must be a list"):
        validate_templates("a {}")
    with pytest.raises(InvalidInputError, match="limit 2"):
        validate_templates(["{}"] * 3, max_templates=2)


def test_template_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("# my templates\na photo of a {}.\n\n  art of the {c}.  \n", "utf-8")
    assert resolve_templates(path) == ("a photo of a {}.", "art of the {c}.")
    path.write_text("a photo of a {}.\n# c\nno placeholder here\n", "utf-8")
    with pytest.raises(InvalidInputError) as info:
        resolve_templates(str(path))
    assert str(info.value).startswith(f"{path}, line 3: template 'no placeholder here'")


def test_template_file_json(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(["a {}.", "the {c}."]), "utf-8")
    assert resolve_templates(path) == ("a {}.", "the {c}.")
    path.write_text(json.dumps(["a {}.", 3]), "utf-8")
    with pytest.raises(InvalidInputError, match=r"t.json: item 2: template must be a string"):
        resolve_templates(path)
    path.write_text("[oops", "utf-8")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        resolve_templates(path)


def test_resolve_unknown_and_remote() -> None:
    with pytest.raises(InvalidInputError, match="neither a template set"):
        resolve_templates("no-such-set")
    with pytest.raises(InvalidInputError, match="unknown template set"):
        resolve_templates("/etc/hosts", allow_files=False)
    assert resolve_templates("photo", allow_files=False) == ("a photo of a {}.",)


def test_empty_template_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n", "utf-8")
    with pytest.raises(InvalidInputError, match="no templates"):
        resolve_templates(path)
    assert parse_templates_text("a {}\n", "x") == ("a {}",)
