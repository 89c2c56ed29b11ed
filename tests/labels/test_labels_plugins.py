"""P1/P2: plugin discovery, the allow-list (a disallowed plugin is never imported), misbehaving
plugins (clean PluginError naming the plugin; others keep working) and the built-in sets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from zsindex.config import Settings
from zsindex.errors import NotFoundError, PluginError
from zsindex.labels import LabelSetSpec, list_plugins, load_plugin

REPO = Path(__file__).resolve().parents[2]


class FakeDists:
    """Writes ``*.dist-info`` folders with ``entry_points.txt`` into a folder on ``sys.path``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.modules: list[str] = []
        self.tag = uuid.uuid4().hex[:8]
        monkeypatch.syspath_prepend(str(root))

    def module(self, code: str) -> str:
        name = f"zsfake_{self.tag}_{len(self.modules)}"
        (self.root / f"{name}.py").write_text(code, "utf-8")
        self.modules.append(name)
        return name

    def dist(self, dist: str, entry_points: dict[str, str]) -> None:
        info = self.root / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[zsindex.labelsets]\n{lines}")

    def cleanup(self) -> None:
        for name in self.modules:
            sys.modules.pop(name, None)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDists]:
    root = tmp_path / "site"
    root.mkdir()
    dists = FakeDists(root, monkeypatch)
    yield dists
    dists.cleanup()


# P1: the allow-list -----------------------------------------------------------------------------


@pytest.fixture
def marker_plugin(fake: FakeDists, tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "imported.marker"
    mod = fake.module(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "def labels():\n    return ['alpha', 'beta']\n"
    )
    name = f"marker-{fake.tag}"
    fake.dist(f"markerdist{fake.tag}", {name: f"{mod}:labels"})
    return name, marker


def test_disallowed_plugin_is_never_imported(marker_plugin: tuple[str, Path]) -> None:
    name, marker = marker_plugin
    allow = Settings.from_env({"ZSINDEX_PLUGINS": "shapes, colors"}).plugins
    assert allow == ("shapes", "colors")
    infos = {info.name: info for info in list_plugins(allow)}
    assert infos[name].allowed is False
    assert infos[name].distribution == f"markerdist{name.split('-')[1]}"
    assert infos[name].version == "0.1"
    assert infos["shapes"].allowed is True
    with pytest.raises(PluginError) as info:
        load_plugin(name, allow)
    message = str(info.value)
    assert f"plugin {name!r} is not allowed by ZSINDEX_PLUGINS=colors,shapes" in message
    assert "unset ZSINDEX_PLUGINS" in message and "\n" not in message
    assert len(load_plugin("shapes", allow)) == 6  # allowed ones still load
    with pytest.raises(PluginError, match="not allowed"):
        load_plugin(name, ())  # an empty allow-list allows nothing
    list_plugins(None)  # listing never imports either
    assert not marker.exists()


def test_allowed_plugin_is_imported(marker_plugin: tuple[str, Path]) -> None:
    name, marker = marker_plugin
    spec = load_plugin(name, (name,))
    assert marker.exists()
    assert spec.names == ("alpha", "beta") and spec.source == f"plugin:{name}"
    assert load_plugin(name, None).names == ("alpha", "beta")  # unset: all installed


def test_builtins_obey_the_allow_list() -> None:
    with pytest.raises(PluginError, match="'imagenet1k' is not allowed"):
        load_plugin("imagenet1k", ("shapes",))


def test_unknown_plugin() -> None:
    with pytest.raises(NotFoundError, match=r"no label-set plugin named 'nope'.*shapes"):
        load_plugin("nope")


# P2: misbehaving plugins ------------------------------------------------------------------------

BAD_PLUGINS: dict[str, tuple[str, str, str]] = {
    # name: (module code, attribute, expected message fragment)
    "raises-at-import": ("raise RuntimeError('boom at import')\n", "f", "failed to import"),
    "exits-at-import": ("import sys\nsys.exit(3)\n", "f", "SystemExit"),
    "missing-attr": ("x = 1\n", "nope", "AttributeError"),
    "not-callable": ("f = ['a']\n", "f", "is not callable"),
    "raises-in-call": (
        "def f():\n    raise ValueError('bad call')\n",
        "f",
        "raised ValueError: bad call",
    ),
    "non-strings": (
        "def f():\n    return ['a', 3, None]\n",
        "f",
        "labels: item 2 must be a string, not int",
    ),
    "nested-non-strings": (
        "def f():\n    return {'labels': ['a', ['b']]}\n",
        "f",
        "labels: item 2",
    ),
    "duplicates": ("def f():\n    return ['cat', 'Cat']\n", "f", "duplicate label 'Cat'"),
    "million": (
        "def f():\n    return [f'l{i}' for i in range(1_000_000)]\n",
        "f",
        "1,000,000 labels",
    ),
    "returns-none": ("def f():\n    return None\n", "f", "not NoneType"),
    "unknown-key": ("def f():\n    return {'lables': ['a']}\n", "f", "unknown keys ['lables']"),
    "bad-templates": (
        "def f():\n    return {'labels': ['a'], 'templates': ['no slot']}\n",
        "f",
        "no {} or {c} placeholder",
    ),
    "bad-flag": (
        "def f():\n    return {'labels': ['a'], 'allow_duplicates': 'yes'}\n",
        "f",
        "allow_duplicates",
    ),
    "cyclic-spec": (
        "from zsindex.labels import LabelSetSpec\n"
        "def f():\n    return LabelSetSpec(names=('a', 'b'), parents=(1, 0))\n",
        "f",
        "cycle",
    ),
    "blank": ("def f():\n    return ['ok', ' ']\n", "f", "blank"),
    "control": ("def f():\n    return ['ok', 'x\\x00y']\n", "f", "U+0000"),
}


@pytest.fixture
def bad_plugins(fake: FakeDists) -> dict[str, str]:
    entry_points = {}
    for name, (code, attr, _) in BAD_PLUGINS.items():
        entry_points[f"{name}-{fake.tag}"] = f"{fake.module(code)}:{attr}"
    good = fake.module("def f():\n    return {'labels': ['x', 'y'], 'templates': ['a {}!']}\n")
    dupes_ok = fake.module(
        "def f():\n    return {'labels': ['m', 'm'], 'allow_duplicates': True}\n"
    )
    entry_points[f"good-{fake.tag}"] = f"{good}:f"
    entry_points[f"dupes-ok-{fake.tag}"] = f"{dupes_ok}:f"
    fake.dist(f"baddist{fake.tag}", entry_points)
    return {name: f"{name}-{fake.tag}" for name in [*BAD_PLUGINS, "good", "dupes-ok"]}


@pytest.mark.parametrize("kind", list(BAD_PLUGINS))
def test_misbehaving_plugin_is_a_clean_error(kind: str, bad_plugins: dict[str, str]) -> None:
    name = bad_plugins[kind]
    with pytest.raises(PluginError) as info:
        load_plugin(name)
    message = str(info.value)
    assert f"plugin {name!r}" in message, message
    assert BAD_PLUGINS[kind][2] in message, message
    assert "\n" not in message
    # the others still work, before and after
    good = load_plugin(bad_plugins["good"])
    assert good.names == ("x", "y") and good.templates == ("a {}!",)
    assert len(load_plugin("cifar10")) == 10


def test_declared_duplicates_are_accepted(bad_plugins: dict[str, str]) -> None:
    spec = load_plugin(bad_plugins["dupes-ok"])
    assert spec.names == ("m", "m") and spec.allow_duplicates


def test_listing_survives_bad_plugins(bad_plugins: dict[str, str]) -> None:
    names = {info.name for info in list_plugins()}
    assert set(bad_plugins.values()) <= names and "imagenet1k" in names
    assert all(info.error is None for info in list_plugins())


def test_same_name_from_two_distributions(fake: FakeDists) -> None:
    a, b = fake.module("def f():\n    return ['a']\n"), fake.module("def f():\n    return ['b']\n")
    name = f"clash-{fake.tag}"
    fake.dist(f"one{fake.tag}", {name: f"{a}:f"})
    fake.dist(f"two{fake.tag}", {name: f"{b}:f"})
    info = next(i for i in list_plugins() if i.name == name)
    assert info.error and "several distributions" in info.error
    with pytest.raises(PluginError, match="several distributions"):
        load_plugin(name)


# Built-in sets ----------------------------------------------------------------------------------


def test_imagenet1k_exact() -> None:
    spec = load_plugin("imagenet1k")
    assert len(spec.names) == 1000
    assert spec.names.count("missile") == 2 and spec.names.count("sunglasses") == 2
    assert spec.names[0] == "tench" and spec.names[-1] == "toilet paper"
    assert spec.templates is not None and len(spec.templates) == 80
    assert spec.allow_duplicates and not spec.is_tree
    assert spec.prompt_texts_for(0)[0] == "a bad photo of a tench."
    simple = load_plugin("imagenet1k-simple")
    assert simple.names == spec.names
    assert simple.templates is not None and len(simple.templates) == 7


def test_cifar_sets() -> None:
    c10 = load_plugin("cifar10")
    assert c10.names == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    c100 = load_plugin("cifar100")
    assert len(c100.names) == 100 and list(c100.names) == sorted(c100.names)
    assert "aquarium fish" in c100.names and not any("_" in n for n in c100.names)
    assert c100.templates is not None and len(c100.templates) == 18


def test_demo_sets() -> None:
    from zsindex.labels.builtin import DEMO_TEMPLATES
    from zsindex.labels.demo_vocab import COLOR_NAMES, SHAPES

    shapes = load_plugin("shapes")
    assert shapes.names == SHAPES and shapes.templates == DEMO_TEMPLATES
    assert load_plugin("colors").names == COLOR_NAMES
    tree = load_plugin("shape-tree")
    assert tree.is_tree and tree.depth == 2
    assert [tree.names[i] for i in tree.roots()] == list(SHAPES)
    assert len(tree.leaves()) == len(SHAPES) * len(COLOR_NAMES)
    assert tree.names[:2] == ("circle", f"{COLOR_NAMES[0]} circle")
    red = tree.names.index("red circle")
    assert tree.names[tree.parents[red]] == "circle"  # type: ignore[index]
    assert tree.rank_of(red) == "color" and tree.rank_of(0) == "shape"
    assert tree.templates == DEMO_TEMPLATES


def test_every_builtin_lists_and_loads() -> None:
    builtins = {
        "imagenet1k",
        "imagenet1k-simple",
        "cifar10",
        "cifar100",
        "shapes",
        "colors",
        "shape-tree",
    }
    infos = {i.name: i for i in list_plugins() if i.name in builtins}
    assert set(infos) == builtins
    for name, info in infos.items():
        assert info.distribution == "zsindex" and info.allowed
        assert isinstance(load_plugin(name), LabelSetSpec)


# The example third-party package ------------------------------------------------------------------


def test_example_plugin_package_installs_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "examples" / "zsindex-plugin-example", source)  # keep the repo clean
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(target))
    try:
        infos = {i.name: i for i in list_plugins()}
        assert infos["fruits"].distribution == "zsindex-plugin-example"
        assert "zsindex_plugin_example" not in sys.modules  # listing imported nothing
        with pytest.raises(PluginError, match="not allowed"):
            load_plugin("fruits", ("shapes",))
        assert "zsindex_plugin_example" not in sys.modules
        fruits = load_plugin("fruits", ("fruits", "fruit-tree"))
        assert "apple" in fruits.names and fruits.source == "plugin:fruits"
        assert fruits.prompt_texts_for(0)[0] == "a photo of a apple, a type of fruit."
        tree = load_plugin("fruit-tree")
        assert tree.is_tree and tree.rank_of(tree.names.index("citrus")) == "family"
    finally:
        sys.modules.pop("zsindex_plugin_example", None)
