"""Generate the committed hostile-image corpus ``tests/corpus/hostile/`` (TESTPLAN I1–I4).

Usage::

    .venv/bin/python scripts/make_hostile_images.py [--out tests/corpus/hostile]

Every file is small (the whole corpus stays well under 2 MB): decompression bombs carry a real or
forged huge header over a tiny body. ``manifest.json`` names each file's expected outcome, decided
here from how the file was built (not by running zsindex on it):

- ``ok``: an odd but valid image; it classifies. Optional ``size`` (width, height after EXIF
  rotation) and ``pixels`` (``[x, y, [r, g, b]]`` in the decoded RGB image, ±``tol``) pin how it
  is handled (rotation applied, alpha on white, first frame, 16-bit scaled).
- ``bad_image`` (HTTP 422): truncated, corrupt or undecodable.
- ``image_too_large`` (HTTP 413): more pixels than the default limit (64 M), refused from the
  header before decoding.
- ``unsupported_media_type`` (HTTP 415): not JPEG/PNG/GIF/WEBP/BMP/TIFF by its magic bytes
  (whatever its file name says).
- ``ok_or_bad_image``: random byte flips in a format without checksums may still decode (to
  garbage pixels, which is fine); it must be one of those two, never anything else.

The output is deterministic for a given Pillow version (fixed seeds).
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HTTP_STATUS = {
    "ok": 200,
    "bad_image": 422,
    "image_too_large": 413,
    "unsupported_media_type": 415,
}
FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "corpus" / "hostile"

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# -- helpers ------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth gradient with some noise: compresses a little, decodes to something real."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1
    ).astype(np.int16)
    arr += rng.integers(-12, 13, size=arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_raw(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_with_chunk(base: bytes, kind: bytes, data: bytes) -> bytes:
    """Insert an ancillary chunk right after IHDR."""
    ihdr_end = 8 + 8 + 13 + 4
    return base[:ihdr_end] + png_chunk(kind, data) + base[ihdr_end:]


def zeros_stream(nbytes: int, level: int = 9) -> bytes:
    comp = zlib.compressobj(level)
    block = b"\x00" * (1 << 20)
    out = []
    left = nbytes
    while left > 0:
        n = min(left, len(block))
        out.append(comp.compress(block[:n]))
        left -= n
    out.append(comp.flush())
    return b"".join(out)


def flip(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p] ^= 0xFF
    return bytes(out)


def random_flips(data: bytes, seed: int, count: int = 8, skip: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    positions = rng.integers(skip, len(data), size=count).tolist()
    return flip(data, positions)


# -- the corpus -----------------------------------------------------------------------------------


Entry = dict[str, Any]


def bombs() -> dict[str, tuple[bytes, Entry]]:
    out: dict[str, tuple[bytes, Entry]] = {}
    # A complete, real 30000x30000 1-bit PNG bomb: every row is filter byte + 3750 zero bytes,
    # 112.5 MB of image data deflated to ~110 KB. Decoding it would need 2.7 GB as RGB.
    row = 1 + 30000 // 8
    out["bomb_png_30000x30000_real.png"] = (
        png_raw(30000, 30000, 1, 0, zeros_stream(row * 30000)),
        {"outcome": "image_too_large", "why": "real 30000x30000 PNG, all-zero IDAT"},
    )
    # The same header over only the first 16 MiB of an RGB image's zero rows (forged-ish).
    out["bomb_png_30000x30000_rgb.png"] = (
        png_raw(30000, 30000, 8, 2, zeros_stream(16 << 20)),
        {"outcome": "image_too_large", "why": "30000x30000 RGB header, partial zero IDAT"},
    )
    # A JPEG whose SOF0 header is rewritten to claim 60000x60000.
    data = bytearray(encode(photo(16, 16), "JPEG", quality=90))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    out["bomb_jpeg_forged_60000x60000.jpg"] = (
        bytes(data),
        {"outcome": "image_too_large", "why": "JPEG SOF0 forged to 60000x60000"},
    )
    # Progressive JPEG (SOF2) forged the same way.
    data = bytearray(encode(photo(16, 16), "JPEG", quality=90, progressive=True))
    sof = data.find(b"\xff\xc2")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 40000, 40000)
    out["bomb_jpeg_progressive_forged.jpg"] = (
        bytes(data),
        {"outcome": "image_too_large", "why": "progressive JPEG SOF2 forged to 40000x40000"},
    )
    # A GIF whose logical screen claims 65535x65535 around a 4x4 frame.
    data = bytearray(encode(Image.new("P", (4, 4), 1), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    out["bomb_gif_screen_65535.gif"] = (
        bytes(data),
        {"outcome": "image_too_large", "why": "GIF logical screen 65535x65535"},
    )
    # A BMP whose header claims 50000x50000 (24-bit) over a few bytes.
    data = bytearray(encode(Image.new("RGB", (4, 4), RED), "BMP"))
    data[18:26] = struct.pack("<ii", 50000, 50000)
    out["bomb_bmp_forged_50000.bmp"] = (
        bytes(data),
        {"outcome": "image_too_large", "why": "BMP header forged to 50000x50000"},
    )
    # A TIFF whose ImageWidth/ImageLength tags claim 50000x50000.
    tif = Image.new("L", (4, 4), 7)
    data = bytearray(encode(tif, "TIFF"))
    for tag, value in ((256, 50000), (257, 50000)):
        # Find the IFD entry for the tag (little-endian TIFF from Pillow) and patch its value.
        (ifd,) = struct.unpack_from("<I", data, 4)
        (n,) = struct.unpack_from("<H", data, ifd)
        for i in range(n):
            at = ifd + 2 + 12 * i
            t, typ, _count = struct.unpack_from("<HHI", data, at)
            if t == tag:
                if typ == 3:
                    struct.pack_into("<H", data, at + 8, value)
                else:
                    struct.pack_into("<I", data, at + 8, value)
    out["bomb_tiff_forged_50000.tif"] = (
        bytes(data),
        {"outcome": "image_too_large", "why": "TIFF width/length tags forged to 50000x50000"},
    )
    # A WEBP (VP8X extended) whose canvas claims 16384x16384 = 268 M pixels.
    data = bytearray(encode(Image.new("RGBA", (16, 16), (255, 0, 0, 128)), "WEBP", quality=80))
    vp8x = data.find(b"VP8X")
    if vp8x > 0:
        w = h = 16384 - 1
        data[vp8x + 12 : vp8x + 18] = w.to_bytes(3, "little") + h.to_bytes(3, "little")
        out["bomb_webp_canvas_16384.webp"] = (
            bytes(data),
            {"outcome_any": ["image_too_large", "bad_image"], "why": "WEBP VP8X canvas forged"},
        )
    # Over the limit by one row (8000x8001 = 64,008,000 > 64,000,000): refused from the header.
    out["bomb_png_8000x8001_just_over.png"] = (
        png_raw(8000, 8001, 1, 0, zeros_stream(1 << 16)),
        {"outcome": "image_too_large", "why": "64,008,000 pixels: just over the default limit"},
    )
    # Extreme aspect ratios within the pixel limit: the model's preprocess scales the short side
    # up to its input size (1x80,000 would become 64x5,120,000 pixels), so beyond 1000:1 they
    # are refused from the header. (10000x10, exactly 1000:1, is among the valid files.)
    out["aspect_1x80000.png"] = (
        encode(Image.new("L", (1, 80000), 128), "PNG"),
        {"outcome": "image_too_large", "why": "1x80,000 (aspect 80000:1) in 238 bytes"},
    )
    out["aspect_1001x1.gif"] = (
        encode(Image.new("P", (1001, 1), 1), "GIF"),
        {"outcome": "image_too_large", "why": "aspect 1001:1, just beyond the limit"},
    )
    # A PNG text chunk that inflates to 16 MiB (Pillow caps text chunks at 1 MiB).
    small = encode(photo(8, 8), "PNG")
    out["bomb_png_ztxt_16mib.png"] = (
        png_with_chunk(small, b"zTXt", b"Comment\x00\x00" + zeros_stream(16 << 20)),
        {"outcome_any": ["ok", "bad_image"], "why": "zTXt inflating to 16 MiB (text bomb)"},
    )
    out["bomb_png_iccp_16mib.png"] = (
        png_with_chunk(small, b"iCCP", b"icc\x00\x00" + zeros_stream(16 << 20)),
        {"outcome_any": ["ok", "bad_image"], "why": "iCCP profile inflating to 16 MiB"},
    )
    return out


def truncated_and_flipped() -> dict[str, tuple[bytes, Entry]]:
    out: dict[str, tuple[bytes, Entry]] = {}
    base = photo(64, 48, seed=1)
    for fmt, ext in FORMATS.items():
        img = base.convert("P") if fmt == "GIF" else base
        params: dict[str, Any] = {"quality": 85} if fmt in ("JPEG", "WEBP") else {}
        if fmt == "TIFF":
            params = {"compression": "tiff_lzw"}
        good = encode(img, fmt, **params)
        low = ext
        out[f"valid_{low}.{ext}"] = (good, {"outcome": "ok", "size": [64, 48]})
        out[f"truncated_half_{low}.{ext}"] = (
            good[: len(good) // 2],
            {"outcome": "bad_image", "why": f"{fmt} cut at half its length"},
        )
        out[f"truncated_header_{low}.{ext}"] = (
            good[:20],
            {"outcome": "bad_image", "why": f"{fmt} cut to its first 20 bytes"},
        )
        out[f"flipped_random_{low}.{ext}"] = (
            random_flips(good, seed=len(good)),
            {"outcome": "ok_or_bad_image", "why": f"{fmt} with 8 random bytes inverted"},
        )
    # Flips that must be detected: structure or checksums, not just pixel values.
    png = out["valid_png.png"][0]
    out["flipped_png_ihdr_crc.png"] = (
        flip(png, [29]),
        {"outcome": "bad_image", "why": "PNG IHDR CRC mismatch"},
    )
    idat = png.find(b"IDAT")
    out["flipped_png_idat_data.png"] = (
        flip(png, [idat + 4, idat + 5, idat + 6]),
        {"outcome": "bad_image", "why": "PNG IDAT zlib header/data inverted (CRC mismatch)"},
    )
    jpg = out["valid_jpg.jpg"][0]
    sos = jpg.find(b"\xff\xda")
    out["flipped_jpeg_no_sos.jpg"] = (
        jpg[:sos] + b"\x00\x00" + jpg[sos + 2 :],
        {"outcome": "bad_image", "why": "JPEG start-of-scan marker destroyed"},
    )
    dqt = jpg.find(b"\xff\xdb")
    out["flipped_jpeg_dqt_length.jpg"] = (
        jpg[: dqt + 2] + b"\xff\xff" + jpg[dqt + 4 :],
        {"outcome": "bad_image", "why": "JPEG quantisation table length runs past the file"},
    )
    gif = out["valid_gif.gif"][0]
    out["truncated_gif_no_frames.gif"] = (
        gif[:13],
        {"outcome": "bad_image", "why": "GIF header and screen descriptor only"},
    )
    bmp = out["valid_bmp.bmp"][0]
    out["flipped_bmp_bitcount.bmp"] = (
        bmp[:28] + struct.pack("<H", 7) + bmp[30:],
        {"outcome": "bad_image", "why": "BMP with 7 bits per pixel"},
    )
    tif = out["valid_tif.tif"][0]
    out["flipped_tiff_ifd_offset.tif"] = (
        tif[:4] + struct.pack("<I", 0x7FFFFFF0) + tif[8:],
        {"outcome": "bad_image", "why": "TIFF first IFD offset far past the end"},
    )
    webp = out["valid_webp.webp"][0]
    out["flipped_webp_vp8_tag.webp"] = (
        webp[:12] + b"XXXX" + webp[16:],
        {"outcome": "bad_image", "why": "WEBP with an unknown first chunk"},
    )
    return out


def foreign() -> dict[str, tuple[bytes, Entry]]:
    """Non-images and formats outside the allow-list (decided by magic bytes, not names)."""
    bad = "unsupported_media_type"
    out: dict[str, tuple[bytes, Entry]] = {
        "empty.png": (b"", {"outcome": "bad_image", "why": "zero bytes"}),
        "text_named.jpg": (b"hello, I am not a picture\n" * 4, {"outcome": bad}),
        "html.png": (b"<!doctype html><html><body><img src=x></body></html>", {"outcome": bad}),
        "svg_named.png": (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
            b'height="10"><rect width="10" height="10" fill="red"/></svg>',
            {"outcome": bad, "why": "SVG (never rendered server-side)"},
        ),
        "pdf.pdf": (
            b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<<>>\n%%EOF\n",
            {"outcome": bad},
        ),
        "eps.eps": (
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
            {"outcome": bad, "why": "EPS would run Ghostscript in Pillow"},
        ),
        "eps_binary_header.eps": (
            b"\xc5\xd0\xd3\xc6" + b"\x00" * 28 + b"%!PS-Adobe-3.0 EPSF-3.0\n",
            {"outcome": bad, "why": "DOS EPS binary header"},
        ),
        "psd_named.png": (
            b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 10, 10, 8, 3) + b"\x00" * 64,
            {"outcome": bad, "why": "Photoshop PSD named .png"},
        ),
        "zip.zip": (b"PK\x03\x04" + b"\x00" * 60, {"outcome": bad}),
        "gzip.gz": (zlib.compress(b"x" * 100), {"outcome": bad}),
        "elf.bin": (b"\x7fELF\x02\x01\x01" + b"\x00" * 57, {"outcome": bad}),
        "jp2.jp2": (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 40, {"outcome": bad}),
        "heic.heic": (
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 40,
            {"outcome": bad},
        ),
        "avif.avif": (
            b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 40,
            {"outcome": bad},
        ),
        "qoi.qoi": (
            b"qoif" + struct.pack(">II", 4, 4) + b"\x03\x00" + b"\x00" * 20,
            {"outcome": bad},
        ),
        "ppm.ppm": (b"P6\n4 4\n255\n" + b"\x80" * 48, {"outcome": bad}),
        "xbm.xbm": (
            b"#define x_width 8\n#define x_height 1\nstatic char x_bits[] = {0x00};\n",
            {"outcome": bad},
        ),
        "gif8_wrong_version.gif": (b"GIF88a" + b"\x00" * 20, {"outcome": bad}),
        "png_magic_prefix_only.png": (b"\x89PNG\r\n", {"outcome": bad, "why": "6 of 8 bytes"}),
        "random_bytes.jpg": (
            np.random.default_rng(7).integers(0, 256, 512, dtype=np.uint8).tobytes(),
            {"outcome": bad},
        ),
        "bm_two_bytes.bmp": (b"BM", {"outcome": "bad_image", "why": "BMP magic and nothing else"}),
        "riff_not_webp.webp": (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 28, {"outcome": bad}),
    }
    for fmt in ("ICO", "PCX", "TGA", "DDS", "IM", "SGI"):
        try:
            size = (16, 16)
            img = Image.new("RGBA" if fmt in ("ICO", "DDS") else "RGB", size, RED)
            out[f"pillow_{fmt.lower()}.{fmt.lower()}"] = (
                encode(img, fmt),
                {"outcome": bad, "why": f"real {fmt} written by Pillow (not on the allow-list)"},
            )
        except (KeyError, OSError, ValueError):  # pragma: no cover - Pillow build without it
            pass
    return out


def odd_but_valid() -> dict[str, tuple[bytes, Entry]]:
    out: dict[str, tuple[bytes, Entry]] = {}
    # EXIF orientation 6 (rotate 90° clockwise to display): stored 40x20 → displayed 20x40.
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))  # left half red in storage
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif_orientation6.jpg"] = (
        encode(stored, "JPEG", quality=95, exif=exif.tobytes()),
        # Rotated 90° clockwise: the stored left half becomes the top half.
        {"outcome": "ok", "size": [20, 40], "pixels": [[10, 5, RED], [10, 35, BLUE]], "tol": 40},
    )
    exif8 = Image.Exif()
    exif8[0x0112] = 8
    out["exif_orientation8.tif"] = (
        encode(stored, "TIFF", exif=exif8.tobytes()),
        # 90° counter-clockwise: the stored left half becomes the bottom half.
        {"outcome": "ok", "size": [20, 40], "pixels": [[10, 35, RED], [10, 5, BLUE]], "tol": 2},
    )
    bogus = Image.Exif()
    bogus[0x0112] = 9  # not an orientation
    out["exif_orientation_invalid.jpg"] = (
        encode(stored, "JPEG", quality=95, exif=bogus.tobytes()),
        {"outcome": "ok", "size": [40, 20]},
    )
    jpg = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    app1 = jpg.find(b"Exif\x00\x00")
    out["exif_corrupt_ifd.jpg"] = (
        jpg[: app1 + 10] + b"\xff\xff\xff\xff" + jpg[app1 + 14 :],
        {"outcome": "ok", "why": "EXIF IFD offset points nowhere: ignored, image still reads"},
    )
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 32))  # left half fully transparent black
    out["rgba_half_transparent.png"] = (
        encode(rgba, "PNG"),
        {"outcome": "ok", "pixels": [[4, 4, WHITE], [28, 4, RED]], "tol": 0},
    )
    out["rgba_half_transparent.webp"] = (
        encode(rgba, "WEBP", lossless=True),
        {"outcome": "ok", "pixels": [[4, 4, WHITE], [28, 4, RED]], "tol": 0},
    )
    out["rgba_half_transparent.tif"] = (
        encode(rgba, "TIFF"),
        {"outcome": "ok", "pixels": [[4, 4, WHITE], [28, 4, RED]], "tol": 0},
    )
    out["rgba_32bit.bmp"] = (
        encode(rgba, "BMP"),
        {"outcome": "ok", "size": [32, 32]},
    )
    la = Image.new("LA", (16, 16), (0, 0))
    la.paste((0, 255), (8, 0, 16, 16))
    out["la_grey_alpha.png"] = (
        encode(la, "PNG"),
        {"outcome": "ok", "pixels": [[2, 2, WHITE], [12, 2, (0, 0, 0)]], "tol": 0},
    )
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (8, 0, 16, 16))
    out["palette_transparency.png"] = (
        encode(pal, "PNG", transparency=0),
        {"outcome": "ok", "pixels": [[2, 2, WHITE], [12, 2, RED]], "tol": 0},
    )
    out["palette_transparency.gif"] = (
        encode(pal, "GIF", transparency=0),
        {"outcome": "ok", "pixels": [[2, 2, WHITE], [12, 2, RED]], "tol": 0},
    )
    rgb_key = Image.new("RGB", (16, 16), (0, 255, 0))
    rgb_key.paste(RED, (8, 0, 16, 16))
    out["rgb_transparency_key.png"] = (
        encode(rgb_key, "PNG", transparency=(0, 255, 0)),
        {"outcome": "ok", "pixels": [[2, 2, WHITE], [12, 2, RED]], "tol": 0},
    )
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    out["cmyk.jpg"] = (
        encode(cmyk, "JPEG", quality=95),
        {"outcome": "ok", "pixels": [[8, 8, RED]], "tol": 30},
    )
    out["cmyk.tif"] = (encode(cmyk, "TIFF"), {"outcome": "ok", "pixels": [[8, 8, RED]], "tol": 2})
    grad16 = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    g16 = Image.fromarray(grad16)  # mode I;16
    out["gray16.png"] = (
        encode(g16, "PNG"),
        # 16-bit is scaled (÷257), not clipped: the right end is white, the left end black.
        {"outcome": "ok", "pixels": [[0, 0, (0, 0, 0)], [31, 0, WHITE]], "tol": 1},
    )
    out["gray16.tif"] = (
        encode(g16, "TIFF"),
        {"outcome": "ok", "pixels": [[0, 0, (0, 0, 0)], [31, 0, WHITE]], "tol": 1},
    )
    rgb16 = Image.new("RGB", (8, 8), RED)
    raw16 = np.zeros((8, 8, 3), dtype=">u2")
    raw16[..., 0] = 65535
    filtered = b"".join(b"\x00" + raw16[r].tobytes() for r in range(8))
    out["rgb48_16bit.png"] = (
        png_raw(8, 8, 16, 2, zlib.compress(filtered)),
        {"outcome": "ok", "pixels": [[4, 4, RED]], "tol": 1},
    )
    del rgb16
    f32 = Image.fromarray(np.tile(np.linspace(0, 1, 16, dtype=np.float32), (4, 1)))
    out["float32.tif"] = (
        encode(f32, "TIFF"),
        {"outcome": "ok", "pixels": [[0, 0, (0, 0, 0)], [15, 0, WHITE]], "tol": 1},
    )
    i32 = Image.fromarray(np.tile(np.array([-5, 1_000_000], dtype=np.int32), (4, 2)))
    out["int32_wide_range.tif"] = (encode(i32, "TIFF"), {"outcome": "ok"})
    bw = Image.new("1", (16, 16), 0)
    bw.paste(1, (8, 0, 16, 16))
    for fmt, ext, params in (
        ("PNG", "png", {}),
        ("BMP", "bmp", {}),
        ("TIFF", "tif", {"compression": "group4"}),
    ):
        out[f"bilevel_1bit.{ext}"] = (
            encode(bw, fmt, **params),
            {"outcome": "ok", "pixels": [[2, 2, (0, 0, 0)], [12, 2, WHITE]], "tol": 0},
        )
    grey = Image.new("L", (16, 16), 128)
    out["grayscale.jpg"] = (encode(grey, "JPEG"), {"outcome": "ok", "size": [16, 16]})
    out["progressive.jpg"] = (
        encode(photo(48, 32, 3), "JPEG", progressive=True, quality=80),
        {"outcome": "ok", "size": [48, 32]},
    )
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    out["animated.gif"] = (
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        {"outcome": "ok", "pixels": [[8, 8, RED]], "tol": 2, "why": "first frame"},
    )
    out["animated.webp"] = (
        encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
        {"outcome": "ok", "pixels": [[8, 8, RED]], "tol": 2, "why": "first frame"},
    )
    out["animated_apng.png"] = (
        encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        {"outcome": "ok", "pixels": [[8, 8, RED]], "tol": 0, "why": "first frame"},
    )
    out["multipage.tif"] = (
        encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        {"outcome": "ok", "pixels": [[8, 8, RED]], "tol": 0, "why": "first page"},
    )
    for fmt, ext in FORMATS.items():
        one = Image.new("RGB", (1, 1), RED)
        out[f"one_pixel.{ext}"] = (
            encode(one.convert("P") if fmt == "GIF" else one, fmt),
            {"outcome": "ok", "size": [1, 1]},
        )
    out["wide_10000x10.png"] = (
        encode(Image.new("RGB", (10000, 10), BLUE), "PNG"),
        {"outcome": "ok", "size": [10000, 10]},
    )
    out["tall_10x10000.png"] = (
        encode(Image.new("L", (10, 10000), 200), "PNG"),
        {"outcome": "ok", "size": [10, 10000]},
    )
    out["wide_10000x10.jpg"] = (
        encode(Image.new("RGB", (10000, 10), BLUE), "JPEG"),
        {"outcome": "ok", "size": [10000, 10]},
    )
    out["png_named.txt"] = (
        encode(Image.new("RGB", (8, 8), RED), "PNG"),
        {"outcome": "ok", "why": "format from magic bytes, not the name"},
    )
    out["png_trailing_garbage.png"] = (
        encode(Image.new("RGB", (8, 8), RED), "PNG") + b"GARBAGE" * 100,
        {"outcome": "ok", "why": "bytes after IEND are ignored"},
    )
    return out


GROUPS: tuple[Callable[[], dict[str, tuple[bytes, Entry]]], ...] = (
    bombs,
    truncated_and_flipped,
    foreign,
    odd_but_valid,
)


def build() -> dict[str, tuple[bytes, Entry]]:
    files: dict[str, tuple[bytes, Entry]] = {}
    for group in GROUPS:
        for name, (data, entry) in group().items():
            if name in files:
                raise SystemExit(f"duplicate corpus name {name}")
            files[name] = (data, entry)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    files = build()
    for old in out.iterdir():
        if old.is_file() and old.name != "manifest.json" and old.name not in files:
            old.unlink()
    manifest = {}
    for name in sorted(files):
        data, entry = files[name]
        (out / name).write_bytes(data)
        outcomes = entry.pop("outcome_any", None) or (
            ["ok", "bad_image"] if entry["outcome"] == "ok_or_bad_image" else [entry["outcome"]]
        )
        entry.pop("outcome", None)
        record: dict[str, Any] = {"outcome": outcomes[0] if len(outcomes) == 1 else outcomes}
        record["http"] = [HTTP_STATUS[o] for o in outcomes]
        if "pixels" in entry:
            entry["pixels"] = [[x, y, list(rgb)] for x, y, rgb in entry["pixels"]]
        record.update(entry)
        record["bytes"] = len(data)
        manifest[name] = record
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(files)} files + manifest.json to {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
