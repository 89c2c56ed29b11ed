#!/usr/bin/env python
"""Train ``zsindex-tiny``: a tiny OpenCLIP ``CLIP`` on the synthetic shapes world.

The model is a standard open_clip ``CLIP`` (ViT image tower, causal text transformer with the
standard 49408-token BPE vocabulary and 77-token context) built from a small config dict, trained
contrastively on images from ``tiny_train_render.py`` (hard backgrounds of every colour, gradients
and textures; a share from :mod:`zsindex.demo`) with varied captions (colour+shape,
shape-only, colour-only; see ``tiny_captions.py`` beside this script). Because several captions in
a batch describe the same image content, the loss uses soft multi-positive targets: caption ``j``
is a positive of image ``i`` whenever it is a true description of it. Some colour+shape
combinations (``HELD_OUT_COMBOS``) never get a colour+shape caption, to measure composition.

Output: ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors`` in ``--out``, loadable with
``open_clip.create_model_and_transforms("local-dir:" + out)``.

Deterministic for a given ``--seed`` (on the same machine and thread count).

Example::

    .venv/bin/python scripts/train_tiny_model.py --out zsindex/models/zsindex-tiny --seed 0
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

# OpenMP threads spin between the many small parallel regions of a step instead of sleeping and
# waking for each (the same weights; on 2 quiet cores the full run took 863 s against 877 s).
# On a busy shared machine, OMP_WAIT_POLICY=PASSIVE leaves the other jobs those cycles.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_captions import HELD_OUT_COMBOS, sample_caption
from tiny_train_render import render_training_image

from zsindex.demo import (
    EVAL_COLOR_TEMPLATES,
    EVAL_TEMPLATES,
    all_combos,
    encode_image,
)
from zsindex.labels.demo_vocab import COLOR_NAMES, SHAPES

T = TypeVar("T")

# Words never used as random filler tokens: the vocabulary itself, other colour and shape words
# (a filler "blue" in a caption of a red circle would teach the model to ignore colour words),
# negations, and every word of the evaluation templates (so evaluation prompts stay unseen).
_PROTECTED_WORDS = {
    *COLOR_NAMES, *SHAPES,
    "pink", "brown", "grey", "gray", "violet", "cyan", "magenta", "gold", "golden", "silver",
    "navy", "crimson", "scarlet", "maroon", "teal", "turquoise", "lime", "beige", "tan",
    "indigo", "lavender", "olive", "amber", "ivory", "colour", "color", "colours", "colors",
    "colored", "coloured", "dark", "light", "bright", "pale", "circles", "squares", "triangles",
    "stars", "crosses", "rings", "round", "oval", "rectangle", "diamond", "heart", "hexagon",
    "pentagon", "plus", "dot", "disc", "disk", "box", "cube", "sphere", "shape", "shapes",
    "not", "no", "never", "without", "nothing", "none", "nor", "neither",
    "image", "images", "picture", "pictures", "thing", "things", "item", "items",
    "illustration", "rendering", "render", "rendered",
}  # fmt: skip


def _render_chunk(args: tuple[int, int, int, tuple[int, int], float, float]) -> np.ndarray:
    """Render one chunk of training images (runs in a worker process)."""
    seed, n, image_size, src_range, jpeg_prob, demo_share = args
    rng = np.random.default_rng(seed)
    combos = all_combos()
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty((n, 2), dtype=np.int64)
    for i in range(n):
        color, shape = combos[int(rng.integers(len(combos)))]
        src = int(rng.integers(src_range[0], src_range[1] + 1))
        img = render_training_image(shape, color, src, rng, demo_share)
        if rng.random() < jpeg_prob:
            img = Image.open(io.BytesIO(encode_image(img, "jpeg", int(rng.integers(55, 96)))))
            img = img.convert("RGB")
        if src != image_size:
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(img)
        labels[i] = (SHAPES.index(shape), COLOR_NAMES.index(color))
    return np.concatenate([out.reshape(n, -1), labels.astype(np.uint8)], axis=1)


def render_training_set(
    n: int,
    image_size: int,
    seed: int,
    workers: int,
    src_range: tuple[int, int],
    jpeg_prob: float,
    demo_share: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``n`` images (uint8 NHWC) and their ``(shape, color)`` indices, deterministically."""
    chunk = 1000
    seeds = np.random.SeedSequence([seed, 7919]).generate_state((n + chunk - 1) // chunk)
    jobs = [
        (int(s), min(chunk, n - k * chunk), image_size, src_range, jpeg_prob, demo_share)
        for k, s in enumerate(seeds)
    ]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(j) for j in jobs]
    arr = np.concatenate(parts)
    pix = image_size * image_size * 3
    images = torch.from_numpy(arr[:, :pix].reshape(n, image_size, image_size, 3).copy())
    labels = torch.from_numpy(arr[:, pix:].astype(np.int64))
    return images, labels


class CaptionSampler:
    """Samples captions for images and tokenizes them, with random filler-word augmentation."""

    def __init__(self, tokenizer: Any, filler_prob: float, max_len: int) -> None:
        self.tok = tokenizer
        self.filler_prob = filler_prob
        self.max_len = max_len
        self.cache: dict[str, list[int]] = {}
        eval_words = {
            w.strip(".,").lower()
            for t in (*EVAL_TEMPLATES, *EVAL_COLOR_TEMPLATES)
            for w in t.replace("{}", " ").replace("-", " ").split()
        }
        protected = _PROTECTED_WORDS | eval_words
        self.protected_ids = {i for w in protected for i in tokenizer.encode(w)}
        self.protected_ids |= {i for w in (*COLOR_NAMES, *SHAPES) for i in tokenizer.encode(w)}
        self.fillers = np.array(
            sorted(
                i
                for word, i in tokenizer.encoder.items()
                if word.endswith("</w>")
                and word[:-4].isascii()
                and word[:-4].isalpha()
                and len(word) > 5
                and word[:-4] not in protected
                and i not in self.protected_ids
            )
        )
        self.sot = tokenizer.sot_token_id
        self.eot = tokenizer.eot_token_id

    def _ids(self, text: str) -> list[int]:
        ids = self.cache.get(text)
        if ids is None:
            ids = self.tok.encode(text)
            self.cache[text] = ids
        return ids

    def sample(
        self, shapes: np.ndarray, colors: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return tokens [B, max_len] and the caption's shape/colour index (-1 when unnamed)."""
        b = len(shapes)
        tokens = torch.zeros((b, self.max_len), dtype=torch.long)
        cap_shape = torch.full((b,), -1, dtype=torch.long)
        cap_color = torch.full((b,), -1, dtype=torch.long)
        for i in range(b):
            shape, color = SHAPES[shapes[i]], COLOR_NAMES[colors[i]]
            text, s, c = sample_caption(shape, color, rng)
            ids = list(self._ids(text))
            if rng.random() < self.filler_prob:
                for _ in range(int(rng.integers(1, 3))):
                    filler = int(self.fillers[int(rng.integers(len(self.fillers)))])
                    free = [k for k, t in enumerate(ids) if t not in self.protected_ids]
                    if free and rng.random() < 0.5:
                        ids[free[int(rng.integers(len(free)))]] = filler
                    else:
                        ids.insert(int(rng.integers(len(ids) + 1)), filler)
            ids = [self.sot, *ids[: self.max_len - 2], self.eot]
            tokens[i, : len(ids)] = torch.tensor(ids)
            cap_shape[i] = -1 if s is None else SHAPES.index(s)
            cap_color[i] = -1 if c is None else COLOR_NAMES.index(c)
        return tokens, cap_shape, cap_color


def encode_text_short(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip ``CLIP.encode_text`` on a short context (the causal mask makes it equal)."""
    n = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:n]
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return x @ model.text_projection


def prefetched(make: Callable[[], T], count: int, depth: int) -> Iterator[T]:
    """``make()`` called ``count`` times in order on a worker thread, at most ``depth`` ahead."""
    out: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for _ in range(count):
                item = make()
                while not stop.is_set():
                    try:
                        out.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            out.put((False, exc))

    thread = threading.Thread(target=work, name="batches", daemon=True)
    thread.start()
    try:
        for _ in range(count):
            ok, item = out.get()
            if not ok:
                raise item
            yield item
    finally:
        stop.set()


def resolve_precision(requested: str) -> str:
    """``bf16`` or ``fp32``; ``auto`` takes bf16 only where oneDNN has native bf16 kernels.

    Emulated bf16 would be slower than fp32, and the choice is recorded with the weights (the
    same seed gives the same weights on the same machine, thread count and precision).
    """
    if requested != "auto":
        return requested
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of the tiny model."""
    layers = [int(v) for v in str(args.vision_layers).split(",")]
    if len(layers) == 4:  # a ModifiedResNet (CNN) image tower, as in the RN50 family
        vision_cfg: dict[str, Any] = {
            "image_size": args.image_size,
            "layers": layers,
            "width": args.vision_width,
            "head_width": args.vision_head_width,
        }
    else:  # a ViT image tower
        vision_cfg = {
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "width": args.vision_width,
            "layers": layers[0],
            "head_width": args.vision_head_width,
            "mlp_ratio": 4.0,
        }
    return {
        "embed_dim": args.embed_dim,
        "vision_cfg": vision_cfg,
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": args.text_width,
            "heads": args.text_heads,
            "layers": args.text_layers,
            "mlp_ratio": 4.0,
        },
    }


@torch.no_grad()
def zero_shot_monitor(
    model: Any, tokenizer: Any, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Zero-shot accuracy on held-out images with the evaluation templates (monitoring only)."""
    model.eval()
    feats = F.normalize(model.encode_image(images), dim=-1)

    def classifier(names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
        rows = []
        for name in names:
            tokens = tokenizer([tp.format(name) for tp in templates])
            t = F.normalize(model.encode_text(tokens), dim=-1)
            rows.append(F.normalize(t.mean(0), dim=-1))
        return torch.stack(rows)

    shape_pred = (feats @ classifier(list(SHAPES), EVAL_TEMPLATES).T).argmax(1)
    color_pred = (feats @ classifier(list(COLOR_NAMES), EVAL_COLOR_TEMPLATES).T).argmax(1)
    combo_names = [f"{c} {s}" for c, s in all_combos()]
    combo_pred = (feats @ classifier(combo_names, EVAL_TEMPLATES).T).argmax(1)
    combo_true = labels[:, 1] * len(SHAPES) + labels[:, 0]
    held = torch.tensor(
        [(COLOR_NAMES[c], SHAPES[s]) in HELD_OUT_COMBOS for s, c in labels.tolist()]
    )
    model.train()
    return {
        "shape": (shape_pred == labels[:, 0]).float().mean().item(),
        "color": (color_pred == labels[:, 1]).float().mean().item(),
        "combo": (combo_pred == combo_true).float().mean().item(),
        "held": (combo_pred == combo_true)[held].float().mean().item(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (local-dir layout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=2200, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-images", type=int, default=24000, help="pre-rendered training images")
    p.add_argument("--val-images", type=int, default=480, help="images of the accuracy monitor")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--scale-lr-mult", type=float, default=10.0, help="logit_scale lr multiplier")
    p.add_argument("--filler-prob", type=float, default=0.3, help="random filler-word rate")
    p.add_argument(
        "--demo-share", type=float, default=0.2, help="share of zsindex.demo-rendered images"
    )
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--vision-width", type=int, default=24)
    p.add_argument(
        "--vision-layers",
        default="1,1,1,1",
        help="4 comma-separated ResNet stage depths (ModifiedResNet), or one ViT depth",
    )
    p.add_argument("--vision-head-width", type=int, default=32)
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-heads", type=int, default=4)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes rendering the data")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time cap (off by default: stopping early makes the weights depend on load)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=500,
        help="steps between accuracy monitors (0: none; they never change the weights)",
    )
    p.add_argument("--fp32", action="store_true", help="store fp32 weights (default fp16)")
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="compute precision of the passes (the weights and optimiser stay fp32): auto takes\n"
        "bf16 autocast where the CPU has native bf16 (AVX512-BF16/AMX), else fp32",
    )
    args = p.parse_args()

    import open_clip
    from safetensors.torch import save_file

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the default SimpleTokenizer (CLIP BPE)

    s = args.image_size
    images, labels = render_training_set(
        args.num_images, s, args.seed, args.workers, (s, 3 * s), 0.3, args.demo_share
    )
    val_images, val_labels = render_training_set(
        args.val_images, s, args.seed + 10_000, 1, (s, 4 * s), 0.3, args.demo_share
    )
    mean = images.float().div(255).mean(dim=(0, 1, 2))
    std = images.float().div(255).std(dim=(0, 1, 2))
    mean_list = [round(float(v), 3) for v in mean.tolist()]
    std_list = [round(float(v), 3) for v in std.tolist()]
    mean, std = torch.tensor(mean_list), torch.tensor(std_list)
    print(f"rendered {len(images)} images in {time.time() - t_start:.0f}s; mean {mean} std {std}")

    def prep(x: torch.Tensor) -> torch.Tensor:
        return (x.permute(0, 3, 1, 2).float().div(255) - mean[:, None, None]) / std[:, None, None]

    val_x = prep(val_images).contiguous(memory_format=torch.channels_last)
    cfg = build_config(args)
    model = open_clip.model.CLIP(**cfg)
    # channels_last lets oneDNN run the image tower's convolutions without layout conversions.
    model = model.to(memory_format=torch.channels_last)
    model.train()
    precision = resolve_precision(args.precision)

    def autocast() -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if name == "logit_scale":
            continue
        if param.ndim < 2 or "embedding" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": args.weight_decay, "lr_mult": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
        # The temperature learns faster than the weights, so it settles within a short run.
        {"params": [model.logit_scale], "weight_decay": 0.0, "lr_mult": args.scale_lr_mult},
    ]
    opt = torch.optim.AdamW(
        groups,
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=True,  # one kernel over all parameters (6.3M of them in the token table)
    )
    sampler = CaptionSampler(tokenizer, args.filler_prob, max_len=20)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e6:.2f}M parameters; precision {precision}; config {json.dumps(cfg)}"
    )

    t_train = time.time()
    step = 0

    def sample_batch() -> tuple[torch.Tensor, ...]:
        idx = torch.from_numpy(rng.integers(0, len(images), size=args.batch_size))
        x = images[idx]
        # Flips and quarter turns keep every shape's class (a turned triangle is a triangle).
        aug = rng.random(2)
        if aug[0] < 0.5:
            x = x.flip(2)
        x = torch.rot90(x, int(aug[1] * 4), dims=(1, 2))
        x = prep(x).contiguous(memory_format=torch.channels_last)
        lab = labels[idx]
        tokens, cs, cc = sampler.sample(lab[:, 0].numpy(), lab[:, 1].numpy(), rng)
        tokens = tokens[:, : int((tokens != 0).sum(1).max())]
        return x, lab, tokens, cs, cc

    # The next batches are drawn on a thread while the model trains on this one; only that
    # thread draws from ``rng``, in step order, so the weights are those of a serial loop.
    batches = prefetched(sample_batch, args.steps, depth=2)
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup)
        progress = max(0, step - args.warmup) / max(1, args.steps - args.warmup)
        lr *= 0.5 * (1 + math.cos(math.pi * progress))
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        x, lab, tokens, cs, cc = next(batches)
        with autocast():
            img_f = F.normalize(model.encode_image(x).float(), dim=-1)
            txt_f = F.normalize(encode_text_short(model, tokens).float(), dim=-1)
        logits = model.logit_scale.exp() * img_f @ txt_f.T
        match = ((cs[None, :] < 0) | (cs[None, :] == lab[:, :1])) & (
            (cc[None, :] < 0) | (cc[None, :] == lab[:, 1:])
        )
        m = match.float()
        loss_i = -(F.log_softmax(logits, 1) * m / m.sum(1, keepdim=True)).sum(1).mean()
        loss_t = -(F.log_softmax(logits, 0) * m / m.sum(0, keepdim=True)).sum(0).mean()
        loss = 0.5 * (loss_i + loss_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        elapsed = time.time() - t_start
        if step % 25 == 0 or step == 1:
            print(
                f"step {step}/{args.steps} loss {loss.item():.3f} "
                f"scale {model.logit_scale.exp().item():.1f} lr {lr:.2e} {elapsed:.0f}s",
                flush=True,
            )
        if args.eval_every and step % args.eval_every == 0:
            print("  monitor", zero_shot_monitor(model, tokenizer, val_x, val_labels), flush=True)
        if args.max_minutes is not None and elapsed > args.max_minutes * 60:
            print(f"stopping early at step {step}: --max-minutes reached")
            break
    batches.close()
    train_s = time.time() - t_train
    model.eval()
    final = zero_shot_monitor(model, tokenizer, val_x, val_labels)
    print("final monitor", final)

    args.out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float32 if args.fp32 else torch.float16
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "open_clip_model.safetensors"))
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": {
            "size": s,
            "mode": "RGB",
            "mean": mean_list,
            "std": std_list,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
            "fill_color": 0,
        },
        "zsindex": {
            "name": "zsindex-tiny",
            "trained_with": "scripts/train_tiny_model.py",
            "seed": args.seed,
            "steps": step,
            "batch_size": args.batch_size,
            "num_images": args.num_images,
            "demo_share": args.demo_share,
            "logit_scale": round(float(model.logit_scale.exp().item()), 4),
            "threads": args.threads,
            "precision": precision,
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "held_out_combos": [list(c) for c in HELD_OUT_COMBOS],
            "train_seconds": round(train_s),
            "total_seconds": round(time.time() - t_start),
        },
    }
    (args.out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(
        f"saved to {args.out}: {step} steps, train {train_s:.0f}s, "
        f"total {time.time() - t_start:.0f}s, "
        f"logit_scale {model.logit_scale.exp().item():.2f}"
    )


if __name__ == "__main__":
    main()
