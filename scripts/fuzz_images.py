"""Coverage-guided fuzzing of zsindex's image decode + preprocess path (TESTPLAN I5, atheris).

The target feeds arbitrary bytes to :func:`zsindex.encoders.images.load_image` (format allow-list
by magic bytes, pixel limit from the header, decoding, EXIF rotation, RGB conversion) and then to
the shipped ``zsindex-tiny`` model's own open_clip preprocess. The only exceptions allowed are
the documented :class:`~zsindex.errors.ImageError` family (``bad_image`` 422,
``image_too_large`` 413, ``unsupported_media_type`` 415); anything else — another exception, a
non-RGB image, a tensor of the wrong shape or with NaNs — is a crash. libFuzzer's ``-timeout``
turns a hang into a crash too.

Usage (``make fuzz``)::

    .venv/bin/python scripts/fuzz_images.py                          # 60 s, seeded from the corpus
    .venv/bin/python scripts/fuzz_images.py -max_total_time=600 -timeout=20
    .venv/bin/python scripts/fuzz_images.py --work /tmp/fuzz -runs=100000

Options of this script (everything else goes to libFuzzer): ``--work DIR`` keeps the growing
corpus and crash artifacts there (default: a fresh temporary folder, printed at start; the
committed seed corpus ``tests/corpus/hostile`` is only read, never written), ``--no-preprocess``
fuzzes decoding alone, ``--max-pixels N`` changes the pixel limit (default: the production one).
Defaults passed to libFuzzer unless given: ``-max_total_time=60 -timeout=20 -rss_limit_mb=4096
-max_len=262144``.

Without atheris, :func:`check_one` is the same target as a plain function; the fast test tier
(``tests/reliability/test_hostile_images.py``) runs it over the corpus and a few hundred
mutations of it (:func:`mutate`).

Python code (Pillow's plugins, zsindex) is instrumented for coverage; Pillow's C decoders
(libjpeg-turbo, libpng/zlib, libwebp, libtiff) are exercised but not coverage-guided.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED_CORPUS = REPO / "tests" / "corpus" / "hostile"
DEFAULT_LIBFUZZER_FLAGS = {
    "-max_total_time": "60",
    "-timeout": "20",
    "-rss_limit_mb": "4096",
    "-max_len": "262144",
}

Preprocess = Callable[[Any], Any]


class UndocumentedError(AssertionError):
    """The decode path produced something outside its contract."""


def tiny_preprocess() -> tuple[Preprocess, int]:
    """The shipped ``zsindex-tiny`` model's inference preprocess and its input size."""
    from zsindex.encoders import load_encoder

    encoder = load_encoder("zsindex-tiny", None, "cpu")
    size = encoder.image_size() if callable(encoder.image_size) else encoder.image_size
    return encoder.preprocess, int(size or 64)


def check_one(
    data: bytes,
    preprocess: Preprocess | None = None,
    size: int = 64,
    max_pixels: int | None = None,
) -> str:
    """Run one input through decode (+ preprocess); return ``"ok"`` or the error code.

    Raises:
        UndocumentedError: (or any non-zsindex exception) for behaviour outside the contract.
    """
    from zsindex.encoders.images import DEFAULT_MAX_PIXELS, load_image
    from zsindex.errors import ImageError, ZsindexError

    try:
        img = load_image(bytes(data), max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    except ImageError as exc:
        if exc.code not in ("bad_image", "image_too_large", "unsupported_media_type"):
            raise UndocumentedError(f"undocumented image error code {exc.code!r}") from exc
        message = str(exc)
        if not message or "\n" in message:
            raise UndocumentedError(f"error message is not one line: {message!r}") from exc
        return exc.code
    except ZsindexError as exc:  # a zsindex error, but not one the decode path documents
        raise UndocumentedError(f"{type(exc).__name__} from the decode path: {exc}") from exc
    if img.mode != "RGB":
        raise UndocumentedError(f"load_image returned mode {img.mode}, not RGB")
    if img.width < 1 or img.height < 1:
        raise UndocumentedError(f"load_image returned size {img.size}")
    if preprocess is not None:
        import torch

        tensor = preprocess(img)
        if tuple(tensor.shape) != (3, size, size):
            raise UndocumentedError(f"preprocess gave shape {tuple(tensor.shape)}")
        if not bool(torch.isfinite(tensor).all()):
            raise UndocumentedError("preprocess gave non-finite values")
    return "ok"


# -- mutations for the plain (no atheris) run ------------------------------------------------------

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


def mutate(data: bytes, rng: random.Random, others: Iterable[bytes] = ()) -> bytes:
    """One to four random edits: bit flips, interesting bytes, truncation, insertion,
    duplication of a block, or a splice with another input."""
    out = bytearray(data or b"\x00")
    pool = list(others)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(out)) if out else 0
        if op == 0 and out:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[pos] = rng.choice(INTERESTING)
        elif op == 2 and len(out) > 1:
            del out[rng.randrange(1, len(out)) :]
        elif op == 3:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4 and out:
            end = min(len(out), pos + rng.randint(1, 64))
            out[pos:pos] = out[pos:end]
        elif op == 5 and len(out) >= 4:
            # A 16- or 32-bit field set to a large value (sizes, lengths, offsets).
            width = rng.choice((2, 4))
            at = rng.randrange(max(1, len(out) - width))
            out[at : at + width] = rng.choice((b"\xff" * width, b"\x7f" + b"\xff" * (width - 1)))
        elif op == 6 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other)) if other else 0
            out = out[:pos] + bytearray(other[cut:])
    return bytes(out[: 1 << 20])


def seed_inputs(folder: Path = SEED_CORPUS) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- atheris -------------------------------------------------------------------------------------


def _split_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="atheris fuzzing of zsindex image decode + preprocess",
        epilog="Arguments starting with '-' that are not listed here go to libFuzzer.",
    )
    parser.add_argument("--work", type=Path, help="corpus + artifacts folder (default: temp)")
    parser.add_argument("--no-preprocess", action="store_true", help="fuzz decoding only")
    parser.add_argument("--max-pixels", type=int, default=None)
    ours, rest = parser.parse_known_args(argv)
    return ours, rest


def main(argv: list[str] | None = None) -> int:
    ours, rest = _split_args(sys.argv[1:] if argv is None else argv)
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris", file=sys.stderr)
        return 2
    # Instrument the Python side of decoding: Pillow's core and format plugins, and zsindex's
    # loader. (torch/open_clip are imported later, uninstrumented.)
    with atheris.instrument_imports(include=["PIL", "zsindex"]):
        import PIL.BmpImagePlugin
        import PIL.GifImagePlugin
        import PIL.Image
        import PIL.ImageFile
        import PIL.ImageOps
        import PIL.JpegImagePlugin
        import PIL.PngImagePlugin
        import PIL.TiffImagePlugin
        import PIL.WebPImagePlugin  # noqa: F401

        import zsindex.encoders.images  # noqa: F401
    preprocess: Preprocess | None = None
    size = 64
    if not ours.no_preprocess:
        preprocess, size = tiny_preprocess()
    work = ours.work or Path(tempfile.mkdtemp(prefix="zsindex-fuzz-"))
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for p in SEED_CORPUS.iterdir():
            if p.is_file():
                shutil.copy(p, corpus / p.name)
    artifacts = work / "artifacts"
    artifacts.mkdir(exist_ok=True)
    flags = dict(DEFAULT_LIBFUZZER_FLAGS)
    flags["-artifact_prefix"] = f"{artifacts}/"
    positional = [a for a in rest if not a.startswith("-")]
    for arg in rest:
        if arg.startswith("-") and "=" in arg:
            key, _, value = arg.partition("=")
            flags[key] = value
    extra = [a for a in rest if a.startswith("-") and "=" not in a]
    args = [sys.argv[0], *extra, *(f"{k}={v}" for k, v in flags.items()), str(corpus), *positional]
    print(f"fuzz work folder: {work} (corpus, artifacts)", file=sys.stderr, flush=True)

    def test_one_input(data: bytes) -> None:
        check_one(data, preprocess, size, ours.max_pixels)

    atheris.Setup(args, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
