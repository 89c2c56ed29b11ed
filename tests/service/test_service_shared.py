"""One suite, two clients: ``Client.local(...)`` and ``Client("http://127.0.0.1:PORT")`` against a
real uvicorn server over the real ``LocalBackend`` (SQLite), giving the same answers and the
same exception classes.

The store is seeded once per module by an in-process "admin" client. Until ``zsindex-tiny`` is
shipped, a random-weight open_clip model in local-dir layout stands in (results are compared
between clients, never against expected labels); writes over HTTP need a plain model name, so
those run only once ``zsindex-tiny`` exists.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from svc_helpers import (
    API_KEY,
    needs_local,
    png_bytes,
    unit_rows,
)

from zsindex.client import Client
from zsindex.config import Settings
from zsindex.errors import (
    ImageError,
    ImageTooLargeError,
    InvalidInputError,
    NotFoundError,
    UnsupportedImageFormatError,
    ZsindexError,
)
from zsindex.results import ClassificationResult

pytestmark = needs_local

TREE_LABELS = ["animal", "dog", "cat", "plant", "rose", "tulip"]
TREE_PARENTS = {"dog": "animal", "cat": "animal", "rose": "plant", "tulip": "plant"}


class World:
    def __init__(self, settings: Settings, model: str, admin: Client) -> None:
        self.settings = settings
        self.model = model
        self.admin = admin
        self.dim = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, model_name: str) -> Iterator[World]:
    root = tmp_path_factory.mktemp("shared")
    model = model_name
    settings = Settings(
        home=root / "home",
        database_url=f"sqlite:///{root / 'shared.sqlite3'}",
        model=model,
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY,),
    )
    admin = Client.local(settings=settings)
    w = World(settings, model, admin)
    w.dim = _dim(admin, model)
    admin.import_labelset(
        "synth", unit_rows(7, w.dim, seed=3), [f"s{i}" for i in range(7)], model=model
    )
    admin.add_labelset(
        "shapes",
        ["circle", "square", "triangle", "star"],
        model=model,
        templates=["a photo of a {}.", "a {} shape"],
    )
    admin.add_labelset("tree", TREE_LABELS, parents=TREE_PARENTS, model=model, templates=["a {}"])
    yield w
    admin.close()


def _dim(admin: Client, model: str) -> int:
    info = admin.add_labelset("dim-probe", ["x"], model=model, templates=["{}"])
    admin.delete_labelset("dim-probe")
    return int(info.dim)


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.server import BackgroundServer

    app = create_app(world.settings, LocalBackend(world.settings), refresh_interval_s=0.5)
    with BackgroundServer(app) as srv:
        yield srv.base_url


@pytest.fixture(scope="module", params=["local", "http"])
def zs(request: pytest.FixtureRequest, world: World) -> Iterator[Client]:
    if request.param == "local":
        client = Client.local(settings=world.settings)
    else:
        client = Client(request.getfixturevalue("server"), api_key=API_KEY, timeout=60)
    client.kind = request.param  # type: ignore[attr-defined]
    yield client
    client.close()


def _same(a: list[ClassificationResult], b: list[ClassificationResult], atol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.image, x.labelset, x.version) == (y.image, y.labelset, y.version)
        assert [p.label for p in x.predictions] == [p.label for p in y.predictions]
        np.testing.assert_allclose(
            [p.probability for p in x.predictions],
            [p.probability for p in y.predictions],
            atol=atol,
        )
        np.testing.assert_allclose(
            [p.score for p in x.predictions], [p.score for p in y.predictions], atol=atol
        )
        assert (x.path is None) == (y.path is None)
        if x.path is not None and y.path is not None:
            assert [(s.rank, s.label) for s in x.path] == [(s.rank, s.label) for s in y.path]


def test_list_show_history(zs: Client, world: World) -> None:
    expected = {i.name: i for i in world.admin.labelsets()}
    got = {i.name: i for i in zs.labelsets()}
    assert set(expected) <= set(got)
    for name in ("synth", "shapes", "tree"):
        assert got[name] == expected[name]
        assert zs.labelset(name) == world.admin.labelset(name)
        assert zs.history(name) == world.admin.history(name)
    assert zs.labelset("tree").depth == 2


def test_embeddings_are_identical(zs: Client, world: World) -> None:
    for name in ("synth", "shapes", "tree"):
        names, matrix = zs.embeddings(name)
        ref_names, ref = world.admin.embeddings(name)
        assert names == ref_names
        assert matrix.dtype == np.float32 and matrix.shape == ref.shape
        np.testing.assert_array_equal(matrix, ref)


@pytest.mark.parametrize(
    "options",
    [
        {"k": 3},
        {"k": 7, "activation": "sigmoid"},
        {"k": 1},
    ],
)
def test_classify_embeddings_same_answers(zs: Client, world: World, options: dict) -> None:
    emb = unit_rows(4, world.dim, seed=11)
    _same(
        zs.classify(embeddings=emb, labelset="synth", **options),
        world.admin.classify(embeddings=emb, labelset="synth", **options),
    )


def test_classify_images_same_answers(zs: Client, world: World, tmp_path: Path) -> None:
    path = tmp_path / "green.png"
    path.write_bytes(png_bytes((20, 220, 20), size=(48, 40)))
    pil = Image.new("RGBA", (30, 30), (200, 0, 200, 100))
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (250, 250, 0)).save(jpeg, format="JPEG")
    images: list[Any] = [str(path), jpeg.getvalue(), pil]
    got = zs.classify(images, labelset="shapes", k=3)
    assert [r.image for r in got] == [str(path), "1", "2"]
    _same(got, world.admin.classify(images, labelset="shapes", k=3), atol=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "flat", "k": 3},
        {"mode": "beam", "k": 2},
        {"mode": "marginal", "k": 2},
        {"mode": "beam", "k": 2, "within": "plant"},
        {"mode": "beam", "k": 1, "rank": 1},
        {"mode": "marginal", "k": 2, "min_confidence": 0.9},
    ],
)
def test_tree_modes_same_answers(zs: Client, world: World, options: dict) -> None:
    emb = unit_rows(3, world.dim, seed=5)
    got = zs.classify(embeddings=emb, labelset="tree", **options)
    _same(got, world.admin.classify(embeddings=emb, labelset="tree", **options))
    if options["mode"] != "flat":
        assert all(r.path is not None for r in got)


def _error_of(fn: Any) -> type[BaseException]:
    with pytest.raises(ZsindexError) as info:
        fn()
    return type(info.value)


@pytest.mark.parametrize(
    "call",
    [
        {"labelset": "missing"},
        {"labelset": "synth", "k": 0},
        {"labelset": "synth", "mode": "sideways"},
        {"labelset": "tree", "mode": "beam", "within": "no-such-node"},
        {"labelset": "tree", "mode": "beam", "rank": "no-such-rank"},
        {"labelset": "synth", "activation": "sigmoid", "mode": "beam"},
        {"labelset": "synth", "dim": 5},
    ],
)
def test_errors_are_the_same_class(zs: Client, world: World, call: dict) -> None:
    call = dict(call)
    dim = call.pop("dim", world.dim)
    emb = unit_rows(1, dim)

    expected = _error_of(lambda: world.admin.classify(embeddings=emb, **call))
    assert _error_of(lambda: zs.classify(embeddings=emb, **call)) is expected
    assert expected in (NotFoundError, InvalidInputError)


def test_missing_labelset_everywhere(zs: Client) -> None:
    for fn in (
        lambda: zs.labelset("nope"),
        lambda: zs.history("nope"),
        lambda: zs.embeddings("nope"),
    ):
        assert _error_of(fn) is NotFoundError


def test_bad_images_same_classes(zs: Client, world: World, tmp_path: Path) -> None:
    from test_service_images import forged_jpeg, png_bomb

    cases = [
        (png_bomb(), ImageTooLargeError),
        (forged_jpeg(), ImageTooLargeError),
        (png_bytes()[:60], ImageError),
        (b"%PDF-1.4 not an image", UnsupportedImageFormatError),
        (b"", ImageError),
    ]
    for payload, cls in cases:
        local = _error_of(lambda p=payload: world.admin.classify([p], labelset="shapes"))
        remote = _error_of(lambda p=payload: zs.classify([p], labelset="shapes"))
        assert local is cls and remote is cls, (payload[:12], local, remote)
    missing = tmp_path / "missing.png"
    assert _error_of(lambda: zs.classify([missing], labelset="shapes")) is ImageError


@pytest.fixture
def write_model(zs: Client, world: World) -> str:
    if zs.kind == "http" and world.model != "zsindex-tiny":  # type: ignore[attr-defined]
        pytest.skip("writes over HTTP need zsindex-tiny (local-dir: models are refused remotely)")
    return world.model


def test_write_round_trip(zs: Client, world: World, write_model: str) -> None:
    name = f"rt-{zs.kind}"  # type: ignore[attr-defined]
    first = zs.add_labelset(name, ["red", "green"], model=write_model, templates=["a {} thing"])
    assert (first.version, first.num_labels) == (1, 2)
    second = zs.add_labelset(
        name, {"red": ["a red thing"], "blue": []}, model=write_model, templates="photo"
    )
    assert second.version == 2
    assert world.admin.labelset(name) == second
    r = zs.classify(embeddings=unit_rows(1, world.dim), labelset=name, k=2)
    assert r[0].version == 2 and {p.label for p in r[0].predictions} == {"red", "blue"}
    imported = zs.import_labelset(
        f"{name}-imp",
        unit_rows(3, world.dim),
        ["a", "b", "c"],
        parents=[None, "a", "a"],
        model=write_model,
    )
    assert imported.depth == 2
    names, _ = zs.embeddings(f"{name}-imp")
    assert names == world.admin.embeddings(f"{name}-imp")[0]
    zs.delete_labelset(name)
    zs.delete_labelset(f"{name}-imp")
    assert _error_of(lambda: world.admin.labelset(name)) is NotFoundError
    assert _error_of(lambda: zs.delete_labelset(name)) is NotFoundError


def test_plugin_and_content_sources(zs: Client, world: World, write_model: str) -> None:
    name = f"src-{zs.kind}"  # type: ignore[attr-defined]
    info = zs.add_labelset(name, plugin="shapes", model=write_model)
    assert info.num_labels == world.admin.labelset(name).num_labels > 0
    info = zs.add_labelset(
        name,
        content="label,parent\nthing,\ncircle,thing\n",
        format="csv",
        model=write_model,
        templates=["{}"],
    )
    assert info.depth == 2
    zs.delete_labelset(name)
