"""End to end: ``zsindex classify`` on a folder of JPEGs with zsindex-tiny.

Renders ``--images`` (default 200) colour-shape photos-sized JPEGs (``--size`` px, default 640),
registers the ``shapes`` label set, then times the CLI's own path (``backend.classify`` per CLI
batch, i.e. the one image pipeline: headers checked, decode + the model's preprocessing in
parallel, encode in batches, exact search; bit-exact decoding as the CLI's default, or JPEG draft
mode with ``--fast-decode``) and, separately on the same files, the pipeline's stages alone:
``prepare`` (decode + preprocess), ``encode`` (forwards) and search, to give the share of each.
Baseline in the same run: the plain loop ``preprocess(Image.open(p))`` → ``encode_image`` one by
one → dense matmul.

    .venv/bin/python benchmarks/bench_classify_e2e.py [--images 200] [--size 640] [--fast-decode]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument(
        "--fast-decode",
        action="store_true",
        help="time the CLI's --fast-decode (JPEG draft mode) instead of its bit-exact default",
    )
    args = ap.parse_args()
    from PIL import Image

    from zsindex.cli.classify import CHUNK
    from zsindex.config import Settings
    from zsindex.demo import encode_image, render_shape
    from zsindex.labels.demo_vocab import COLOR_NAMES, SHAPES
    from zsindex.local import LocalBackend
    from zsindex.options import ClassifyOptions, LabelSource

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.images):
            shape, color = SHAPES[i % len(SHAPES)], COLOR_NAMES[i % len(COLOR_NAMES)]
            path = tmp / f"img{i:04d}.jpg"
            path.write_bytes(encode_image(render_shape(shape, color, args.size, rng), "jpeg"))
            files.append((str(path), path))
        backend = LocalBackend(Settings(home=tmp / "home", device="cpu"))
        backend.add_labelset("shapes", LabelSource(plugin="shapes"), model="zsindex-tiny")
        loaded = backend.resolve("shapes")
        pipeline = backend.pipeline
        encoder = pipeline.encoder(loaded)
        encoder.load()
        options = ClassifyOptions(k=3, fast_decode=args.fast_decode)

        def classify(items: list[tuple[str, Path]]) -> list[Any]:
            """What ``zsindex classify`` does: one ``backend.classify`` per batch of files."""
            results = []
            for start in range(0, len(items), CHUNK):
                batch = items[start : start + CHUNK]
                results += backend.classify(
                    "shapes",
                    images=[p for _, p in batch],
                    image_names=[n for n, _ in batch],
                    options=options,
                    on_error="raise" if len(items) == 1 else "report",
                )
            return results

        classify(files[:8])  # warm-up

        start = time.perf_counter()
        results = classify(files)
        total = time.perf_counter() - start
        assert len(results) == args.images and all(r.error is None for r in results)

        start = time.perf_counter()
        prepared = [pipeline.prepare(loaded, p, n, fast_decode=args.fast_decode) for n, p in files]
        t_decode = time.perf_counter() - start
        start = time.perf_counter()
        emb = pipeline.encode(loaded, prepared)
        t_encode = time.perf_counter() - start
        start = time.perf_counter()
        loaded.index.search(emb, 3, logit_scale=loaded.logit_scale)
        t_search = time.perf_counter() - start

        import torch

        model, preprocess = encoder.model, encoder.preprocess
        matrix = np.asarray(loaded.matrix, dtype=np.float32)
        start = time.perf_counter()
        with torch.no_grad():
            for _, p in files:
                f = model.encode_image(preprocess(Image.open(p)).unsqueeze(0))
                f = f / f.norm(dim=-1, keepdim=True)
                logits = loaded.logit_scale * f.numpy() @ matrix.T
                np.argsort(-logits[0])[:3]
        t_plain = time.perf_counter() - start
        parts = t_decode + t_encode + t_search
        report = {
            "machine": f"{platform.machine()}",
            "images": args.images,
            "size": args.size,
            "fast_decode": args.fast_decode,
            "zsindex_images_per_s": args.images / total,
            "plain_images_per_s": args.images / t_plain,
            "share_decode": t_decode / parts,
            "share_encode": t_encode / parts,
            "share_search": t_search / parts,
        }
        decoding = "fast (draft) decode" if args.fast_decode else "exact decode"
        print(
            f"zsindex classify ({decoding}), {args.images} JPEGs {args.size}px: "
            f"{args.images / total:.1f} "
            f"images/s; plain one-by-one loop {args.images / t_plain:.1f} images/s -> "
            f"{t_plain / total:.2f}x"
        )
        print(
            f"time shares (measured separately): decode+preprocess {t_decode / parts:.0%}, "
            f"encode {t_encode / parts:.0%}, search {t_search / parts:.1%}"
        )
        print(json.dumps(report))


if __name__ == "__main__":
    main()
