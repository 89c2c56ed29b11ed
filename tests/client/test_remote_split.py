"""Calls larger than one request, split by the remote client, against a real server.

A live uvicorn server on loopback runs the real app over the real ``LocalBackend`` (SQLite,
``zsindex-tiny``). The client learns the server's limits from ``GET /v1/limits`` and splits by
count and by body size; every request is watched through an ``httpx`` event hook (or a real
transport that also lets a second client register a new version between two requests).

The first tests hold with the default limits (a server without ``GET /v1/limits``); the later
ones need the service's ``GET /v1/limits``, ``on_error`` and ``/tree`` routes and fields.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from zsindex import Client
from zsindex.config import Settings
from zsindex.errors import ConflictError, PayloadTooLargeError, UnsupportedImageFormatError
from zsindex.results import ClassificationResult

TINY = "zsindex-tiny"
DIM = 128
KEY = "split-test-key"
COLORS = ["red", "green", "blue", "yellow"]


def _png(color: tuple[int, int, int], size: tuple[int, int] = (24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _noise_png(seed: int, side: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _unit(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


Serve = Callable[..., str]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """``serve(**ServiceLimits fields)`` → the base URL of a live server with ``colors``."""
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.limits import ServiceLimits
    from zsindex.service.server import BackgroundServer

    started: list[tuple[BackgroundServer, LocalBackend]] = []

    def start(**limits: Any) -> str:
        settings = Settings(
            home=tmp_path / f"home{len(started)}",
            device="cpu",
            model=TINY,
            pretrained=None,
            api_keys=(KEY,),
        )
        backend = LocalBackend(settings)
        app = create_app(settings, backend, limits=ServiceLimits(**limits), refresh_interval_s=0)
        server = BackgroundServer(app).start()
        started.append((server, backend))
        with Client(server.base_url, api_key=KEY) as writer:
            writer.add_labelset("colors", COLORS, model=TINY)
        return server.base_url

    yield start
    for server, backend in started:
        server.stop()
        backend.close()


class Watched:
    """A client whose requests are recorded: (path, body bytes) of each."""

    def __init__(self, base_url: str) -> None:
        self.sent: list[tuple[str, int]] = []
        self.http = httpx.Client(
            base_url=base_url, timeout=120, event_hooks={"request": [self._record]}
        )
        self.client = Client(base_url, api_key=KEY, http=self.http)

    def _record(self, request: httpx.Request) -> None:
        self.sent.append((request.url.path, len(request.read())))

    def classify_sizes(self) -> list[int]:
        return [size for path, size in self.sent if path == "/v1/classify"]

    def close(self) -> None:
        self.client.close()
        self.http.close()


@pytest.fixture
def watched() -> Iterator[Callable[[str], Watched]]:
    made: list[Watched] = []

    def make(base_url: str) -> Watched:
        made.append(Watched(base_url))
        return made[-1]

    yield make
    for w in made:
        w.close()


def _same(a: list[ClassificationResult], b: list[ClassificationResult]) -> None:
    """Equal results: names, versions and labels exactly, probabilities and scores closely."""
    assert [(r.image, r.version, r.error) for r in a] == [(r.image, r.version, r.error) for r in b]
    for x, y in zip(a, b, strict=True):
        assert [p.label for p in x.predictions] == [p.label for p in y.predictions]
        got = [(p.probability, p.score) for p in x.predictions]
        want = [(p.probability, p.score) for p in y.predictions]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _mixed_images(tmp_path: Path, n: int) -> list[Any]:
    """n images as paths, bytes, binary files and PIL images, in turn."""
    images: list[Any] = []
    for i in range(n):
        color = (i * 3 % 256, 100, 200 - i)
        if i % 4 == 0:
            path = tmp_path / f"img{i}.png"
            path.write_bytes(_png(color))
            images.append(path)
        elif i % 4 == 1:
            images.append(_png(color))
        elif i % 4 == 2:
            images.append(io.BytesIO(_png(color)))
        else:
            images.append(Image.new("RGB", (24, 24), color))
    return images


def _rewind(images: list[Any]) -> list[Any]:
    for image in images:
        if isinstance(image, io.BytesIO):
            image.seek(0)
    return images


# -- with the default limits (the server need not have GET /v1/limits) ---------------------


def test_seventy_images_are_two_requests_in_order(
    serve: Serve, watched: Callable[[str], Watched], tmp_path: Path
) -> None:
    w = watched(serve())
    images = _mixed_images(tmp_path, 70)
    results = w.client.classify(images, labelset="colors", k=2)
    assert len(w.classify_sizes()) == 2  # 64 + 6
    names = [str(x) if isinstance(x, Path) else str(i) for i, x in enumerate(images)]
    assert [r.image for r in results] == names
    # The same images in requests of their own: the same answers, in the same order.
    _rewind(images)
    alone = w.client.classify(images[:35], labelset="colors", k=2) + [
        replace(r, image=str(int(r.image) + 35) if not r.image.endswith(".png") else r.image)
        for r in w.client.classify(images[35:], labelset="colors", k=2)
    ]
    _same(results, alone)


def test_five_thousand_embeddings_are_split_by_rows(
    serve: Serve, watched: Callable[[str], Watched]
) -> None:
    w = watched(serve())
    emb = _unit(5000, 1)
    results = w.client.classify(embeddings=emb, labelset="colors", k=3)
    assert len(w.classify_sizes()) == 2  # 4096 + 904
    assert [r.image for r in results] == [str(i) for i in range(5000)]
    head = w.client.classify(embeddings=emb[:2500], labelset="colors", k=3)
    tail = w.client.classify(embeddings=emb[2500:], labelset="colors", k=3)
    tail = [replace(r, image=str(int(r.image) + 2500)) for r in tail]
    _same(results, head + tail)


class WriterBetweenRequests(httpx.HTTPTransport):
    """A real transport that, after chosen classify requests, registers a new version of
    ``colors`` through a second client: a concurrent writer, timed between two requests."""

    def __init__(self, base_url: str, after: set[int]) -> None:
        super().__init__()
        self.base_url = base_url
        self.after = after
        self.count = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/v1/classify":
            self.count += 1
            if self.count in self.after:
                response.read()
                with Client(self.base_url, api_key=KEY) as writer:
                    writer.add_labelset("colors", [*COLORS, f"new{self.count}"], model=TINY)
        return response


def test_a_version_change_mid_call_redoes_the_call_once(serve: Serve) -> None:
    base_url = serve()
    transport = WriterBetweenRequests(base_url, after={1})
    with Client(base_url, api_key=KEY, transport=transport) as client:
        results = client.classify(embeddings=_unit(5000, 2), labelset="colors", k=5)
    assert transport.count == 4  # two requests, then both again
    assert {r.version for r in results} == {2}
    assert all(len(r.predictions) == 5 for r in results)
    assert {p.label for r in results for p in r.predictions} <= {*COLORS, "new1"}


def test_a_second_change_is_a_conflict(serve: Serve) -> None:
    base_url = serve()
    transport = WriterBetweenRequests(base_url, after={1, 3})
    client = Client(base_url, api_key=KEY, transport=transport)
    with client, pytest.raises(ConflictError, match="label set colors changed during the call"):
        client.classify(embeddings=_unit(5000, 3), labelset="colors")


# -- with the server's own limits (needs GET /v1/limits) -------------------------------------


def test_split_by_the_servers_counts(
    serve: Serve, watched: Callable[[str], Watched], tmp_path: Path
) -> None:
    w = watched(serve(max_images_per_request=8, max_embeddings_per_request=100))
    images = _mixed_images(tmp_path, 20)
    results = w.client.classify(images, labelset="colors")
    assert len(w.classify_sizes()) == 3  # 8 + 8 + 4
    assert len(results) == 20 and len({r.version for r in results}) == 1
    emb = _unit(250, 4)
    results = w.client.classify(embeddings=emb, labelset="colors")
    assert len(w.classify_sizes()) == 6  # and 100 + 100 + 50
    assert [r.image for r in results] == [str(i) for i in range(250)]


def test_split_by_body_size(serve: Serve, watched: Callable[[str], Watched]) -> None:
    cap = 300_000
    w = watched(serve(max_body_bytes=cap))
    images = [_noise_png(i, 128) for i in range(10)]  # about 49 KB each
    results = w.client.classify(images, labelset="colors")
    sizes = w.classify_sizes()
    assert len(sizes) >= 2 and max(sizes) <= cap
    assert [r.image for r in results] == [str(i) for i in range(10)]
    emb = _unit(3000, 5)  # about 3 KB a row in JSON
    results = w.client.classify(embeddings=emb, labelset="colors")
    sizes = w.classify_sizes()[len(sizes) :]
    assert len(sizes) >= 10 and max(sizes) <= cap
    assert len(results) == 3000


def test_one_image_over_the_body_limit(serve: Serve, watched: Callable[[str], Watched]) -> None:
    w = watched(serve(max_body_bytes=100_000))
    big = _noise_png(0, 256)  # about 197 KB
    with pytest.raises(PayloadTooLargeError, match=r"^1: .* bytes is more than the server takes"):
        w.client.classify([_png((255, 0, 0)), big], labelset="colors")
    assert len(w.classify_sizes()) == 1  # the image before it was sent; the big one never
    report = w.client.classify([_png((255, 0, 0)), big], labelset="colors", on_error="report")
    assert report[0].error is None and report[0].predictions
    assert (report[1].image, report[1].error_code) == ("1", "payload_too_large")
    assert report[1].version == report[0].version and report[1].predictions == []


def test_unreadable_files_are_reported_in_place(serve: Serve, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_png((0, 255, 0)))
    missing = tmp_path / "missing.png"
    with Client(serve(), api_key=KEY) as client:
        results = client.classify([good, missing], labelset="colors", on_error="report")
        assert [r.image for r in results] == [str(good), str(missing)]
        assert results[1].error == f"{missing}: no such file"
        assert results[1].error_code == "bad_image"
        assert results[0].error is None and results[0].version == results[1].version
        only_missing = client.classify([missing], labelset="colors", on_error="report")
        assert only_missing[0].version == client.labelset("colors").version


def test_an_imported_tree_is_a_tree(serve: Serve) -> None:
    with Client(serve(), api_key=KEY) as client:
        client.import_labelset(
            "byname", _unit(3, 6), ["root", "left", "right"], parents=[None, "root", "root"]
        )
        client.import_labelset("byrow", _unit(3, 7), ["a", "a", "b"], parents=[None, 0, 0])
        assert client.tree("byname").parents == [-1, 0, 0]
        assert client.tree("byrow").parents == [-1, 0, 0]
        names, matrix = client.embeddings("byrow")
        assert names == ["a", "a", "b"] and matrix.shape == (3, DIM)


def test_names_the_multipart_form_escapes_come_back_as_given(serve: Serve, tmp_path: Path) -> None:
    paths = [tmp_path / 'quote"d.txt', tmp_path / "new\nline.txt", tmp_path / "ünï cødé.txt"]
    for path in paths:
        path.write_text("not an image")
    with Client(serve(), api_key=KEY) as client:
        for path in paths:
            expected = f"{path}: not a supported image format"
            with pytest.raises(UnsupportedImageFormatError) as info:
                client.classify([path], labelset="colors")
            assert info.value.message.startswith(expected)
        results = client.classify(paths, labelset="colors", on_error="report")
        assert [r.image for r in results] == [str(p) for p in paths]
        assert all(
            r.error and r.error.startswith(f"{p}: not a supported")
            for r, p in zip(results, paths, strict=True)
        )
