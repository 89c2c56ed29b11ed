"""Safe image decoding: format allow-list by magic bytes, size checks before decoding, RGB output.

``load_image`` turns a path, bytes or PIL image into an RGB ``PIL.Image``:

* the format is decided from the magic bytes (JPEG, PNG, GIF, WEBP, BMP, TIFF) and Pillow is told to
  use only that decoder; anything else is :class:`UnsupportedImageFormatError`;
* the pixel count is read from the header and checked before decoding (forged headers and
  decompression bombs → :class:`ImageTooLargeError`; Pillow's own ``DecompressionBombError`` too);
* EXIF orientation is applied; alpha (RGBA, LA, palette or grey/RGB with a transparency key) is
  composited on white; CMYK, YCbCr, 1-bit and grey become RGB; 16-bit (``I;16*``, ``I``) is scaled
  to 8 bits (÷257, not clipped); animations give their first frame;
* truncated or corrupt files → :class:`ImageError` naming the file.

JPEG draft mode: with ``draft_size=S`` a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale while
both sides stay ≥ S, so a 1024×768 photo for a 224-pixel model decodes at 512×384. The model's own
preprocessing (resize, crop) follows either way. Measured on a random-weight ViT-B-32 with 64
photo-like 1024×768 JPEGs (``benchmarks/bench_image_encoding.py``): max |Δ| 1.3e-3 against the
plain open_clip path, minimum cosine 0.99997, top-1 agreement 0.984 (63 of 64) over 200
ImageNet-name labels; ``test_draft_mode_close_to_plain`` in
``tests/encoders/test_encoders_images.py`` holds it to max |Δ| < 5e-3 and cosine > 0.999.
Pass ``draft_size=None`` for bit-exact open_clip preprocessing.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps

from zsindex.errors import ImageError, ImageTooLargeError, UnsupportedImageFormatError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "ImageHeader",
    "ImageSource",
    "check_image",
    "load_image",
    "open_source",
    "sniff_format",
    "to_rgb",
]

ImageSource = Union[str, Path, bytes, bytearray, memoryview, Image.Image]  # noqa: UP007

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 64_000_000
_HEAD = 16


@dataclass(frozen=True)
class ImageHeader:
    """What :func:`check_image` learns without decoding pixels."""

    format: str
    width: int
    height: int


def sniff_format(head: bytes) -> str | None:
    """The allow-listed format named by the first bytes of a file, or ``None``."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


def _name(source: ImageSource, name_for_errors: str | None) -> str:
    if name_for_errors:
        return name_for_errors
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return "<image bytes>"


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _one_line(exc: BaseException) -> str:
    # Object reprs ("<_io.BytesIO object at 0x7f...>") would make one image's message differ
    # from run to run and from one entry point to another.
    text = _OBJECT_REPR.sub("the image", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_source(source: str | Path | bytes | bytearray | memoryview, name: str) -> IO[bytes]:
    """A binary stream over a file or bytes (the caller closes it); errors name the image."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    try:
        return open(source, "rb")  # closed by the caller
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({_one_line(exc)})") from None


MAX_ASPECT_RATIO = 1000
"""Longest side over shortest side. Preprocessing scales the short side up to the model's input
size, so a 1×1,000,000 strip (a 2 KB PNG) would become gigapixels: such images are refused."""


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: invalid image size {width}x{height}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageTooLargeError(
            f"{name}: {width}x{height} has an aspect ratio beyond {MAX_ASPECT_RATIO}:1; "
            "crop it to the region to classify"
        )
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels"
        )


def _open(fh: IO[bytes], name: str, max_pixels: int) -> tuple[Image.Image, str]:
    head = fh.read(_HEAD)
    fh.seek(0)
    if not head:
        raise ImageError(f"{name}: empty file")
    fmt = sniff_format(head)
    if fmt is None:
        raise UnsupportedImageFormatError(
            f"{name}: not a supported image format (allowed: {', '.join(ALLOWED_FORMATS)})"
        )
    try:
        img = Image.open(fh, formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: decompression bomb refused ({_one_line(exc)})") from None
    except Exception as exc:
        raise ImageError(f"{name}: corrupt {fmt} header ({_one_line(exc)})") from None
    _check_pixels(img.width, img.height, max_pixels, name)
    return img, fmt


def check_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name_for_errors: str | None = None,
) -> ImageHeader:
    """Validate magic bytes and header size without decoding the pixels.

    Raises:
        UnsupportedImageFormatError: not JPEG/PNG/GIF/WEBP/BMP/TIFF.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        ImageError: unreadable file or corrupt header.
    """
    name = _name(source, name_for_errors)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels, name)
        return ImageHeader(format=source.format or "PIL", width=source.width, height=source.height)
    with open_source(source, name) as fh:
        img, fmt = _open(fh, name, max_pixels)
        with img:
            return ImageHeader(format=fmt, width=img.width, height=img.height)


def _scale_16bit(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = np.rint(arr.astype(np.float32) / 257.0)
    else:  # "I" (32-bit int) or "F": 16-bit range if it fits, else stretch min..max
        a = arr.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = np.rint(a * 255.0)
        elif img.mode == "I" and lo >= 0.0 and hi <= 65535.0:
            out = np.rint(a / 257.0)
        elif hi > lo:
            out = np.rint((a - lo) * (255.0 / (hi - lo)))
        else:
            out = np.zeros_like(a)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image to RGB (alpha on white, 16-bit scaled, palettes expanded)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I") or mode == "F":
        return _scale_16bit(img).convert("RGB")
    has_alpha = "A" in mode or mode in ("RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _finish(img: Image.Image, name: str) -> Image.Image:
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: decompression bomb refused ({_one_line(exc)})") from None
    except Exception as exc:
        raise ImageError(
            f"{name}: cannot decode image, truncated or corrupt ({_one_line(exc)})"
        ) from None
    try:
        rotated = ImageOps.exif_transpose(img)
        if rotated is not None:
            img = rotated
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        pass
    try:
        return to_rgb(img)
    except Exception as exc:
        raise ImageError(
            f"{name}: cannot convert {img.mode} image to RGB ({_one_line(exc)})"
        ) from None


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name_for_errors: str | None = None,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode an image to RGB safely.

    Args:
        source: a file path, the file's bytes, or a PIL image.
        max_pixels: refuse images with more pixels than this (checked from the header).
        name_for_errors: how errors name the image (default: the path, or ``<image bytes>``).
        draft_size: for JPEGs, let libjpeg decode at a reduced scale keeping both sides ≥ this
            (``None``: full-size decode).

    Returns:
        A loaded RGB image, independent of any open file.

    Raises:
        UnsupportedImageFormatError, ImageTooLargeError, ImageError: see the module docstring.
    """
    name = _name(source, name_for_errors)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels, name)
        out = _finish(source, name)
        return out.copy() if out is source else out
    with open_source(source, name) as fh:
        img, fmt = _open(fh, name, max_pixels)
        with img:
            if draft_size and fmt == "JPEG":
                try:
                    img.draft("RGB", (int(draft_size), int(draft_size)))
                except Exception as exc:
                    raise ImageError(f"{name}: corrupt JPEG ({_one_line(exc)})") from None
            out = _finish(img, name)
            if out is img:
                out = img.copy()
    return out
