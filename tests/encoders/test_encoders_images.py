"""Image decoding safety, odd image kinds, and image embeddings."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from enc_helpers import Bundle
from PIL import Image

from zsindex.encoders import Encoder, check_image, load_image
from zsindex.errors import ImageError, ImageTooLargeError, UnsupportedImageFormatError


def photo_jpeg(seed: int, w: int = 1024, h: int = 768, quality: int = 90) -> bytes:
    """A photo-like JPEG: gradients, flat blobs and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [x / w * rng.uniform(100, 255), y / h * rng.uniform(100, 255), (x + y) / (w + h) * 200],
        axis=-1,
    )
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(40, 250)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 12, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def save(img: Image.Image, path: Path, **kwargs: Any) -> Path:
    img.save(path, **kwargs)
    return path


def png_with_ihdr(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data at all)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is patched to claim ``width`` x ``height``."""
    data = bytearray(photo_jpeg(0, 64, 48))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


# ---------------------------------------------------------------- odd image kinds


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = save(img, tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    pixel: Any = out.getpixel((10, 2))
    assert pixel[2] > 200  # the left strip is now on top


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    out = load_image(save(img, tmp_path / "a.png"))
    assert out.mode == "RGB"
    assert out.getpixel((3, 3)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)
    la = Image.new("LA", (2, 2), (0, 128))
    assert load_image(save(la, tmp_path / "la.png")).getpixel((0, 0)) == (127, 127, 127)


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    img.putpixel((1, 1), 1)
    for name in ("p.png", "p.gif"):
        out = load_image(save(img, tmp_path / name, transparency=0))
        assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent green → white
        assert out.getpixel((1, 1)) == (255, 0, 0)


def test_cmyk_16bit_1bit(tmp_path: Path) -> None:
    cmyk = load_image(save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg"))
    red: Any = cmyk.getpixel((4, 4))
    assert cmyk.mode == "RGB" and red[0] > 240
    raw = np.array([[0, 257 * 128, 65535, 300]], dtype=np.uint16)
    g16 = load_image(save(Image.fromarray(raw), tmp_path / "g16.png"))
    assert np.asarray(g16)[0, :, 0].tolist() == [0, 128, 255, 1]  # scaled, not clipped
    i32 = load_image(Image.fromarray(raw.astype(np.int32)))
    assert np.asarray(i32)[0, :, 0].tolist() == [0, 128, 255, 1]
    bw = Image.new("1", (8, 8), 1)
    bw.putpixel((0, 0), 0)
    out = load_image(save(bw, tmp_path / "bw.png"))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((5, 5)) == (255, 255, 255)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert getattr(Image.open(path), "n_frames", 1) == 3
    assert load_image(path).getpixel((4, 4)) == (255, 0, 0)


@pytest.mark.parametrize(("fmt", "suffix"), [("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")])
def test_other_allowed_formats(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = save(Image.new("RGB", (5, 3), (10, 20, 30)), tmp_path / f"x.{suffix}", format=fmt)
    assert check_image(path).format == fmt
    assert load_image(path).size == (5, 3)


# ---------------------------------------------------------------- bad input


def test_wrong_magic_bytes(tmp_path: Path) -> None:
    for name, data in [
        ("text.jpg", b"hello, I am not an image"),
        ("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("x.pdf", b"%PDF-1.4\n"),
        ("icon.ico", b"\x00\x00\x01\x00\x01\x00"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UnsupportedImageFormatError, match=name):
            check_image(path)
        with pytest.raises(UnsupportedImageFormatError):
            load_image(data)


def test_truncated_and_corrupt(tmp_path: Path) -> None:
    full = photo_jpeg(1, 256, 192)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full[: len(full) // 2])
    assert check_image(cut).width == 256  # the header is intact
    with pytest.raises(ImageError, match=re.escape("cut.jpg")):
        load_image(cut)
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        png, "PNG"
    )
    with pytest.raises(ImageError, match=re.escape("upload.png")):
        load_image(png.getvalue()[:-400], name_for_errors="upload.png")
    with pytest.raises(ImageError, match="corrupt"):
        load_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")


def test_bombs_refused_before_decoding() -> None:
    for data in (png_with_ihdr(100_000, 100_000), png_with_ihdr(9_000, 9_000)):
        start = time.monotonic()
        with pytest.raises(ImageTooLargeError):
            check_image(data)
        with pytest.raises(ImageTooLargeError):
            load_image(data)
        assert time.monotonic() - start < 1
    for data in (jpeg_with_size(60_000, 60_000), jpeg_with_size(10_000, 8_000)):
        with pytest.raises(ImageTooLargeError):
            load_image(data)
    small = png_with_ihdr(2_000, 1_000)
    assert check_image(small).width == 2_000
    with pytest.raises(ImageTooLargeError, match="1,000,000"):
        check_image(small, max_pixels=1_000_000)


# ---------------------------------------------------------------- embeddings


def test_encode_odd_images(tiny_clip: Bundle, tmp_path: Path) -> None:
    enc = Encoder.from_open_clip(tiny_clip.model, tiny_clip.tokenizer, tiny_clip.preprocess)
    sources: list[Any] = [
        save(Image.new("RGB", (1, 1), (9, 9, 9)), tmp_path / "one.png"),
        save(Image.new("RGB", (10_000, 10), (200, 10, 10)), tmp_path / "wide.png"),
        save(Image.new("RGBA", (30, 30), (0, 0, 0, 0)), tmp_path / "alpha.png"),
        save(Image.new("CMYK", (30, 30)), tmp_path / "cmyk.jpg"),
        Image.new("L", (16, 16), 128),
        photo_jpeg(3, 64, 48),
    ]
    out = enc.encode_images(sources, batch_size=4)
    assert out.shape == (6, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # order is kept and batching does not change results
    single = np.concatenate([enc.encode_images([s]) for s in sources])
    assert np.abs(out - single).max() < 1e-5
    with pytest.raises(ImageError, match=re.escape("missing.png")):
        enc.encode_images([sources[0], tmp_path / "missing.png"])
    assert enc.encode_images([]).shape == (0, 32)


def test_plain_path_matches_open_clip(vitb32: Bundle, tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F

    enc = Encoder.from_open_clip(vitb32.model, vitb32.tokenizer, vitb32.preprocess)
    paths = [tmp_path / f"{i}.jpg" for i in range(3)]
    for i, p in enumerate(paths):
        p.write_bytes(photo_jpeg(i, 320, 240))
    ours = enc.encode_images(paths, draft=False)
    with torch.no_grad():
        batch = torch.stack([vitb32.preprocess(Image.open(p)) for p in paths])
        ref = F.normalize(vitb32.model.encode_image(batch), dim=-1).numpy()
    assert np.abs(ours - ref).max() < 1e-5


def test_draft_mode_close_to_plain(vitb32: Bundle) -> None:
    """Draft decoding (1024x768 JPEG → 512x384 in libjpeg) vs full decode, random ViT-B-32.

    Measured here on 16 photo-like JPEGs: max |Δ| 1.1e-3, min cosine 0.99998, top-1 agreement
    1.0 over 200 ImageNet-name labels (0.94 over 200 random unit vectors, whose margins are tiny).
    """
    enc = Encoder.from_open_clip(vitb32.model, vitb32.tokenizer, vitb32.preprocess)
    images = [photo_jpeg(10 + i) for i in range(4)]
    plain = enc.encode_images(images, draft=False)
    draft = enc.encode_images(images, draft=True)
    assert np.abs(plain - draft).max() < 5e-3
    assert (plain * draft).sum(axis=1).min() > 0.999
    assert load_image(images[0], draft_size=224).size == (512, 384)
    assert load_image(images[0]).size == (1024, 768)


def test_try_encode_images_keeps_going(tiny_clip: Bundle, tmp_path: Path) -> None:
    enc = Encoder.from_open_clip(tiny_clip.model, tiny_clip.tokenizer, tiny_clip.preprocess)
    good = photo_jpeg(4, 64, 48)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good[: len(good) // 3])
    res = enc.try_encode_images([good, bad, b"not an image", good], batch_size=2)
    assert sorted(res.errors) == [1, 2]
    assert isinstance(res.errors[2], UnsupportedImageFormatError)
    assert "bad.jpg" in str(res.errors[1])
    assert res.ok.tolist() == [True, False, False, True]
    assert np.isnan(res.embeddings[1]).all() and np.isfinite(res.embeddings[[0, 3]]).all()
    assert np.abs(res.embeddings[0] - enc.encode_images([good])[0]).max() < 1e-6
