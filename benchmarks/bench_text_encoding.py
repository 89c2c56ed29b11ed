"""Label-matrix build: zsindex vs ``open_clip.build_zero_shot_classifier``, same run, same model.

200 ImageNet class names × the 7 OpenAI "simple" templates, random-weight ViT-B-32 on CPU.

* first build: ``Encoder.encode_labels`` (prompt dedup, cross-label batching, length-sorted
  batches run at their real token length, inference mode) with an empty embedding cache —
  includes computing the model fingerprint;
* rebuild: the same labels again with the cache filled (what re-registering a label set costs);
* rebuild, new process-like path: a fresh ``load_encoder("local-dir:...")`` on the same weights
  (resolution + cache lookups; the model is never loaded) — with ``--local-dir``.

Run: ``.venv/bin/python benchmarks/bench_text_encoding.py [--labels 200] [--repeat 1]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of each side (median)")
    ap.add_argument("--local-dir", action="store_true", help="also time a fresh load_encoder")
    args = ap.parse_args()

    import open_clip
    import torch
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES

    from zsindex.encoders import Encoder, MemoryTextEmbeddingCache, load_encoder

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    labels = list(IMAGENET_CLASSNAMES[: args.labels])
    lambdas = list(SIMPLE_IMAGENET_TEMPLATES)
    templates = [t("{}") for t in lambdas]  # the same templates as format strings
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, open_clip {open_clip.__version__}"
    )
    print(
        f"{len(labels)} labels x {len(templates)} templates = {len(labels) * len(templates)} "
        "prompts, random-weight ViT-B-32, CPU fp32\n"
    )

    base_t, first_t, rebuild_t = [], [], []
    ref = out = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = open_clip.build_zero_shot_classifier(
                model,
                tokenizer,
                labels,
                lambdas,
                num_classes_per_batch=10,
                device="cpu",
                use_tqdm=False,
            ).T.numpy()
        base_t.append(time.perf_counter() - t0)

        cache = MemoryTextEmbeddingCache()
        t0 = time.perf_counter()
        enc = Encoder.from_open_clip(model, tokenizer, preprocess, name="ViT-B-32-random")
        out = enc.encode_labels(labels, templates, cache=cache)
        first_t.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        again = enc.encode_labels(labels, templates, cache=cache)
        rebuild_t.append(time.perf_counter() - t0)
        assert again.num_encoded == 0 and np.array_equal(again.embeddings, out.embeddings)

    assert ref is not None and out is not None
    diff = float(np.abs(out.embeddings - ref).max())
    b, f, r = (statistics.median(x) for x in (base_t, first_t, rebuild_t))
    print(f"{'':28s}{'seconds':>10s}{'vs open_clip':>14s}")
    print(f"{'open_clip build_zero_shot':28s}{b:10.3f}{1.0:13.1f}x")
    print(f"{'zsindex first build':28s}{f:10.3f}{b / f:13.1f}x")
    print(f"{'zsindex rebuild (cached)':28s}{r:10.4f}{b / r:13.0f}x")
    print(f"\nmax |zsindex - open_clip| = {diff:.2e}  (distinct prompts run: {out.num_prompts})")

    if args.local_dir:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            cfg = open_clip.get_model_config("ViT-B-32")
            (folder / "open_clip_config.json").write_text(
                __import__("json").dumps({"model_cfg": cfg, "preprocess_cfg": {}})
            )
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(folder / "open_clip_model.safetensors"))
            cache = MemoryTextEmbeddingCache()
            first = load_encoder(f"local-dir:{folder}", device="cpu")
            first.encode_labels(labels, templates, cache=cache)
            t0 = time.perf_counter()
            fresh = load_encoder(f"local-dir:{folder}", device="cpu")
            res = fresh.encode_labels(labels, templates, cache=cache)
            dt = time.perf_counter() - t0
            assert res.num_encoded == 0 and not fresh.is_loaded
            print(
                f"{'zsindex rebuild, fresh load_encoder':36s}{dt:10.4f}s  {b / dt:.0f}x "
                "(model not loaded)"
            )


if __name__ == "__main__":
    main()
