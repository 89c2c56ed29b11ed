"""``HttpBackend`` / ``Client(base_url)`` against a live server over the real backend."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from svc_backends import DIM, MODEL, RecordingBackend
from svc_helpers import API_KEY, png_bytes, unit_rows

from zsindex.client import Client
from zsindex.errors import (
    AuthError,
    ImageError,
    ImageTooLargeError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    StoreError,
    TransportError,
    UnsupportedImageFormatError,
)
from zsindex.remote import HttpBackend
from zsindex.service.limits import ServiceLimits


@pytest.fixture
def remote(live) -> Client:
    server = live()
    with Client(server.base_url, api_key=API_KEY, timeout=30) as c:
        yield c


def test_round_trip_of_every_method(remote: Client, tmp_path: Path) -> None:
    info = remote.add_labelset("pets", ["dog", "cat"], templates=["a photo of a {}."])
    assert (info.name, info.version, info.num_labels) == ("pets", 1, 2)
    assert remote.labelset("pets") == info
    assert {i.name for i in remote.labelsets()} == {"colors", "pets"}
    matrix = unit_rows(3, DIM, seed=1)
    imported = remote.import_labelset("imp", matrix, ["x", "y", "z"], model=MODEL)
    assert (imported.num_labels, imported.model, imported.dim) == (3, MODEL, DIM)
    names, got = remote.embeddings("imp")
    assert names == ["x", "y", "z"] and got.dtype == np.float32
    # The store re-normalises imported rows (float32 rounding only: they were unit rows).
    np.testing.assert_allclose(got, matrix, rtol=0, atol=1e-6)
    remote.import_labelset("imp", matrix.T.copy(), ["x", "y", "z"], model=MODEL)  # [dim, N]
    assert [h.version for h in remote.history("imp")] == [1, 2]
    remote.delete_labelset("imp")
    with pytest.raises(NotFoundError):
        remote.labelset("imp")


def test_classify_paths_bytes_and_pil(remote: Client, tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes((255, 0, 0)))
    pil = Image.new("RGBA", (16, 16), (0, 0, 255, 128))
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    results = remote.classify([str(path), path, png_bytes(), pil, cmyk], labelset="colors", k=2)
    assert [r.image for r in results] == [str(path), str(path), "2", "3", "4"]
    assert all(r.version == 1 and len(r.predictions) == 2 for r in results)
    assert results[0].predictions[0].label == "red"  # the real tiny model sees the colour
    emb = remote.classify(embeddings=unit_rows(2, DIM), labelset="colors", k=3)
    assert [r.image for r in emb] == ["0", "1"] and len(emb[0].predictions) == 3


def test_errors_map_back_to_the_same_class(remote: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        remote.classify(embeddings=unit_rows(1, DIM), labelset="missing")
    with pytest.raises(InvalidInputError):
        remote.classify(embeddings=unit_rows(1, 3), labelset="colors")
    with pytest.raises(UnsupportedImageFormatError):
        remote.classify([b"not an image at all"], labelset="colors")
    with pytest.raises(ImageError):
        remote.classify([png_bytes()[:40]], labelset="colors")
    with pytest.raises(ImageError, match="no such file"):
        remote.classify([tmp_path / "missing.png"], labelset="colors")
    with pytest.raises(InvalidInputError):
        remote.add_labelset("bad", ["a"], pretrained="/etc/passwd")


def test_image_too_large_and_payload_too_large(live) -> None:
    server = live(limits=ServiceLimits(max_image_pixels=100, max_body_bytes=50_000))
    with Client(server.base_url, api_key=API_KEY) as c:
        with pytest.raises(ImageTooLargeError):
            c.classify([png_bytes(size=(20, 20))], labelset="colors")
        noise = Image.fromarray(
            np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
        )
        buf = io.BytesIO()
        noise.save(buf, format="PNG")
        with pytest.raises(PayloadTooLargeError):
            c.classify([buf.getvalue()], labelset="colors")


def test_auth_errors(live) -> None:
    server = live()
    with Client(server.base_url) as anonymous, pytest.raises(AuthError, match="API key"):
        anonymous.add_labelset("x", ["a"])
    with Client(server.base_url, api_key="wrong") as wrong:
        with pytest.raises(AuthError):
            wrong.delete_labelset("colors")
        assert wrong.labelsets()  # reads are open by default
    assert "wrong" not in repr(wrong.backend)


def test_overloaded_and_unreachable(live, backend_under_test: RecordingBackend) -> None:
    backend_under_test.encode_delay_s = 1.0
    server = live(limits=ServiceLimits(request_timeout_s=0.1))
    with Client(server.base_url) as c, pytest.raises(OverloadedError):
        c.classify([png_bytes()], labelset="colors")
    port = server.port
    server.stop()
    with Client(f"http://127.0.0.1:{port}", timeout=2) as gone, pytest.raises(TransportError):
        gone.labelsets()


def test_non_json_error_falls_back_to_status() -> None:
    import httpx

    from zsindex.remote_answers import error_from_response as _error_from_response

    request = httpx.Request("GET", "http://x/v1/labelsets")
    err = _error_from_response(httpx.Response(404, text="nope", request=request))
    assert isinstance(err, NotFoundError)
    err = _error_from_response(httpx.Response(502, text="bad gateway", request=request))
    assert isinstance(err, TransportError)  # a proxy's answer: the service was not reached
    err = _error_from_response(
        httpx.Response(503, json={"code": "store_unavailable", "message": "db"}, request=request)
    )
    assert isinstance(err, StoreError)
    err = _error_from_response(
        httpx.Response(409, json={"code": "conflict", "message": "busy"}, request=request)
    )
    assert type(err).__name__ == "ConflictError" and err.message == "busy"
    assert isinstance(HttpBackend("http://127.0.0.1:1", api_key="k"), HttpBackend)
