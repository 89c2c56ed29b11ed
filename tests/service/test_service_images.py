"""I1–I3 over HTTP: bombs → 413 before decoding, truncated/corrupt → 422, other formats → 415.

These are the answers of ``on_error=raise``; without it each bad image is reported in its own
200 result with the same code (``test_service_image_errors``). Over the real ``LocalBackend``
(production loader :mod:`zsindex.encoders.images`, real ``zsindex-tiny`` forwards);
``test_service_shared`` repeats the key cases through both clients.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image
from starlette.testclient import TestClient
from svc_helpers import jpeg_bytes, png_bytes

from zsindex.service.limits import ServiceLimits


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims ``width × height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def forged_jpeg(width: int = 60000, height: int = 60000) -> bytes:
    """A small JPEG whose SOF header is rewritten to claim a huge size."""
    data = bytearray(jpeg_bytes(size=(16, 16)))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _post(tc: TestClient, payload: bytes, name: str = "x.png"):
    return tc.post(
        "/v1/classify",
        data={"labelset": "colors", "on_error": "raise"},
        files=[("images", (name, payload, "application/octet-stream"))],
    )


@pytest.mark.parametrize(
    "payload", [png_bomb(), forged_jpeg()], ids=["png-30000x30000", "jpeg-forged"]
)
def test_decompression_bombs_are_413(client: TestClient, payload: bytes) -> None:
    r = _post(client, payload)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "image_too_large"


def test_pixel_limit_is_configurable(make_app) -> None:
    with TestClient(make_app(limits=ServiceLimits(max_image_pixels=500))) as tc:
        assert _post(tc, png_bytes(size=(20, 20))).status_code == 200
        r = _post(tc, png_bytes(size=(30, 30)))
        assert r.status_code == 413 and r.json()["code"] == "image_too_large"


def _formats() -> dict[str, bytes]:
    out = {}
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        Image.new("RGB", (24, 24), (10, 200, 30)).save(buf, format=fmt)
        out[fmt] = buf.getvalue()
    return out


FORMATS = _formats()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_truncated_images_are_422(client: TestClient, fmt: str) -> None:
    data = FORMATS[fmt]
    for cut in (len(data) // 2, 20):
        r = _post(client, data[:cut], name=f"t.{fmt.lower()}")
        assert r.status_code in (415, 422), (fmt, cut, r.status_code, r.text)
        assert r.status_code != 415 or cut < 16  # only too-short-to-sniff files may look foreign
        assert r.json()["code"] in ("bad_image", "unsupported_media_type")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_byte_flipped_images_never_5xx(client: TestClient, fmt: str) -> None:
    data = bytearray(FORMATS[fmt])
    for i in range(16, len(data), max(1, len(data) // 12)):
        flipped = bytearray(data)
        flipped[i] ^= 0xFF
        r = _post(client, bytes(flipped))
        assert r.status_code in (200, 413, 415, 422), (fmt, i, r.text)


@pytest.mark.parametrize(
    "payload",
    [
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        b"8BPS\x00\x01" + b"\x00" * 64,  # Photoshop
        b"\x00\x00\x01\x00\x01\x00" + b"\x00" * 64,  # ICO
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"GIF8" + b"\x00" * 4,  # wrong GIF magic
        b"plain text, not an image",
    ],
    ids=["pdf", "psd", "ico", "svg", "bad-gif-magic", "text"],
)
def test_formats_outside_the_allow_list_are_415(client: TestClient, payload: bytes) -> None:
    r = _post(client, payload, name="looks-like.png")  # the name does not matter
    assert r.status_code == 415, r.text
    assert r.json()["code"] == "unsupported_media_type"


def test_empty_upload_is_422(client: TestClient) -> None:
    r = _post(client, b"")
    assert r.status_code == 422 and r.json()["code"] == "bad_image"


def test_one_bad_image_fails_the_request_cleanly_when_asked_to_raise(client: TestClient) -> None:
    files = [
        ("images", ("ok.png", png_bytes(), "image/png")),
        ("images", ("bomb.png", png_bomb(), "image/png")),
    ]
    r = client.post("/v1/classify", data={"labelset": "colors", "on_error": "raise"}, files=files)
    assert r.status_code == 413
    assert "bomb.png" in r.json()["message"]
