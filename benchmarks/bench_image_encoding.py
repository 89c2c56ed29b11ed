"""Image encoding throughput: zsindex ``Encoder.encode_images`` vs the plain open_clip loop.

64 photo-like 1024×768 JPEGs (gradients, flat blobs, sensor noise; ~270 KB each), random-weight
ViT-B-32 on CPU.

* baseline: ``model.encode_image(preprocess(Image.open(p)).unsqueeze(0))`` one image at a time;
* zsindex: decode + preprocess in a small thread pool overlapping batched forwards, JPEG draft
  decoding (libjpeg scales 1024×768 to 512×384 before the model's own resize), inference mode;
* zsindex without draft (same pipeline, full-size decode) to separate the two effects.

Also prints how far the draft path's embeddings are from the baseline's (max |Δ|, min cosine,
top-1 agreement over 200 ImageNet-name labels).

Run: ``.venv/bin/python benchmarks/bench_image_encoding.py [--images 64] [--batch-size 32]``
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photo_jpeg(seed: int, w: int = 1024, h: int = 768) -> bytes:
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
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    import open_clip
    import torch
    import torch.nn.functional as F
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from zsindex.encoders import Encoder

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    model.eval()
    enc = Encoder.from_open_clip(model, open_clip.get_tokenizer("ViT-B-32"), preprocess)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Pillow {Image.__version__}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.images):
            p = Path(tmp) / f"img{i:03d}.jpg"
            p.write_bytes(photo_jpeg(i))
            paths.append(p)
        kb = np.mean([p.stat().st_size for p in paths]) / 1024
        print(f"{len(paths)} JPEGs 1024x768, {kb:.0f} KB average, random-weight ViT-B-32, CPU\n")

        # warm-up both paths
        with torch.no_grad():
            model.encode_image(preprocess(Image.open(paths[0])).unsqueeze(0))
        enc.encode_images(paths[:2])

        t0 = time.perf_counter()
        base = []
        with torch.no_grad():
            for p in paths:
                feats = model.encode_image(preprocess(Image.open(p)).unsqueeze(0))
                base.append(F.normalize(feats, dim=-1))
        base_s = time.perf_counter() - t0
        ref = torch.cat(base).numpy()

        t0 = time.perf_counter()
        ours = enc.encode_images(paths, batch_size=args.batch_size, num_workers=args.workers)
        ours_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        nodraft = enc.encode_images(
            paths, batch_size=args.batch_size, num_workers=args.workers, draft=False
        )
        nodraft_s = time.perf_counter() - t0

    n = len(paths)
    print(f"{'':34s}{'images/s':>10s}{'vs plain loop':>15s}")
    print(f"{'plain open_clip loop (batch 1)':34s}{n / base_s:10.2f}{1.0:14.2f}x")
    print(f"{'zsindex encode_images (draft)':34s}{n / ours_s:10.2f}{base_s / ours_s:14.2f}x")
    print(
        f"{'zsindex encode_images (no draft)':34s}{n / nodraft_s:10.2f}{base_s / nodraft_s:14.2f}x"
    )

    labels = enc.encode_labels(list(IMAGENET_CLASSNAMES[:200]), ["a photo of a {}."]).embeddings
    agree = float(np.mean((ref @ labels.T).argmax(1) == (ours @ labels.T).argmax(1)))
    print(f"\nno-draft vs plain loop: max |Δ| = {np.abs(nodraft - ref).max():.1e}")
    print(
        f"draft vs plain loop:    max |Δ| = {np.abs(ours - ref).max():.1e}, "
        f"min cosine = {(ours * ref).sum(1).min():.6f}, top-1 agreement (200 ImageNet "
        f"labels) = {agree:.3f}"
    )


if __name__ == "__main__":
    main()
