#!/usr/bin/env python
"""Zero-shot accuracy of ``zsindex-tiny`` measured with plain open_clip.

The model is loaded with ``open_clip.create_model_and_transforms("local-dir:<dir>")`` and its own
tokenizer (``open_clip.get_tokenizer("local-dir:<dir>")``). Fresh images are rendered with
:mod:`zsindex.demo` from a seed different from training's, at sizes from 64 to 512 px, saved
as PNG and JPEG files, reloaded from disk with PIL and passed through the model's own preprocess.
Class prompts use templates that never occur in the training captions.

Tasks: shapes (6 classes), colours (8), colour+shape (48), and the held-out colour+shape combos
(images of ``HELD_OUT_COMBOS`` classified among all 48 classes).

``--renderer independent`` evaluates instead on ``scripts/render_eval_shapes.py``, a renderer that
shares no code, colour values, sizes or backgrounds with training (dark, navy, label-coloured,
gradient and textured backgrounds); results are then grouped by background kind, with the
per-colour accuracy and the most frequent colour and shape confusions.

Example::

    .venv/bin/python scripts/eval_tiny_model.py --model-dir zsindex/models/zsindex-tiny
    .venv/bin/python scripts/eval_tiny_model.py --renderer independent --per-combo 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from render_eval_shapes import COLOR_NAMES as EVAL_COLOR_NAMES
from render_eval_shapes import save_eval_set
from tiny_captions import COLOR_TEMPLATES, COMBO_TEMPLATES, HELD_OUT_COMBOS, SHAPE_TEMPLATES

from zsindex.demo import (
    EVAL_COLOR_TEMPLATES,
    EVAL_TEMPLATES,
    all_combos,
    encode_image,
    render_shape,
)
from zsindex.labels.demo_vocab import COLOR_NAMES, SHAPES

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "zsindex" / "models" / "zsindex-tiny"

# Extra colour prompt styles, reported for information (none of them is a training caption).
COLOR_PROMPT_STYLES: dict[str, tuple[str, ...]] = {
    "something {} (main)": EVAL_COLOR_TEMPLATES,
    "a {} thing": ("an image of a {} thing.", "a picture showing a {} thing.", "a {} thing."),
    "a {} object": ("an image of a {} object.", "a picture of a {} object."),
    "bare colour name": EVAL_TEMPLATES,
}


def _training_caption_set() -> set[str]:
    caps: set[str] = set()
    for t in (*COMBO_TEMPLATES, *SHAPE_TEMPLATES, *COLOR_TEMPLATES):
        for art in ("a", "an"):
            caps.add(t.replace("{a}", art).replace("{c}", "{}").replace("{s}", "{}"))
    return caps


def check_templates_unseen(templates: tuple[str, ...]) -> None:
    """Fail if an evaluation template is also a training caption template."""
    seen = _training_caption_set()
    for t in templates:
        if t in seen or t.rstrip(".") in seen or t + "." in seen:
            raise SystemExit(f"evaluation template {t!r} is a training template")


def render_eval_set(
    root: Path, seed: int, per_combo: int, sizes: list[int], formats: list[str]
) -> list[tuple[Path, str, str, str]]:
    """Render and save the evaluation images; returns ``(path, shape, color, size + format)``."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        for fmt in formats:
            ext = "png" if fmt == "png" else "jpg"
            for k in range(per_combo):
                for color, shape in all_combos():
                    img = render_shape(shape, color, size, rng)
                    path = root / f"{size}_{fmt}" / f"{color}_{shape}_{k}.{ext}"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(encode_image(img, fmt))
                    rows.append((path, shape, color, f"{size}px {fmt}"))
    return rows


def render_independent_set(
    root: Path, seed: int, per_combo: int, any_rotation: bool
) -> list[tuple[Path, str, str, str]]:
    """Render the independent set; returns ``(path, shape, color, background kind)``."""
    if EVAL_COLOR_NAMES != COLOR_NAMES:
        raise SystemExit("render_eval_shapes.py and demo_vocab disagree on the colour names")
    return [
        (p, e.shape, e.color, e.background)
        for p, e in save_eval_set(root, seed, per_combo, any_rotation)
    ]


@torch.no_grad()
def evaluate(
    model_dir: Path,
    seed: int,
    per_combo: int,
    sizes: list[int],
    formats: list[str],
    renderer: str = "demo",
    any_rotation: bool = False,
) -> dict[str, Any]:
    """Run every task and return the accuracies (overall and per size/format)."""
    import open_clip

    spec = f"local-dir:{model_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    tokenizer = open_clip.get_tokenizer(spec)
    model.eval()
    for templates in COLOR_PROMPT_STYLES.values():
        check_templates_unseen(templates)

    with tempfile.TemporaryDirectory(prefix="zsindex-tiny-eval-") as tmp:
        if renderer == "independent":
            rows = render_independent_set(Path(tmp), seed, per_combo, any_rotation)
        else:
            rows = render_eval_set(Path(tmp), seed, per_combo, sizes, formats)
        feats = []
        for start in range(0, len(rows), 256):
            batch = []
            for path, *_ in rows[start : start + 256]:
                with Image.open(path) as im:
                    batch.append(preprocess(im.convert("RGB")))
            feats.append(model.encode_image(torch.stack(batch), normalize=True))
    image_features = torch.cat(feats)

    shape_true = torch.tensor([SHAPES.index(r[1]) for r in rows])
    color_true = torch.tensor([COLOR_NAMES.index(r[2]) for r in rows])
    combo_true = color_true * len(SHAPES) + shape_true
    held = torch.tensor([(r[2], r[1]) in HELD_OUT_COMBOS for r in rows])
    group = [r[3] for r in rows]

    def predict(names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
        classifier = open_clip.build_zero_shot_classifier(
            model, tokenizer, names, templates, num_classes_per_batch=None
        )
        return (image_features @ classifier).argmax(dim=1)

    combo_names = [f"{c} {s}" for c, s in all_combos()]
    shape_pred = predict(list(SHAPES), EVAL_TEMPLATES)
    shape_ok = shape_pred == shape_true
    color_pred = predict(list(COLOR_NAMES), EVAL_COLOR_TEMPLATES)
    color_ok = color_pred == color_true
    combo_ok = predict(combo_names, EVAL_TEMPLATES) == combo_true

    def acc(ok: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        sel = ok if mask is None else ok[mask]
        return round(float(sel.float().mean()), 4)

    confusions = Counter(
        f"{COLOR_NAMES[t]} -> {COLOR_NAMES[p]}"
        for t, p in zip(color_true.tolist(), color_pred.tolist(), strict=True)
        if t != p
    )
    shape_confusions = Counter(
        f"{SHAPES[t]} -> {SHAPES[p]}"
        for t, p in zip(shape_true.tolist(), shape_pred.tolist(), strict=True)
        if t != p
    )
    results: dict[str, Any] = {
        "renderer": renderer + (" (any rotation)" if any_rotation else ""),
        "seed": seed,
        "n_images": len(rows),
        "logit_scale": round(float(model.logit_scale.exp()), 3),
        "tasks": {
            "shapes (6)": {"top1": acc(shape_ok), "n": len(rows)},
            "colours (8)": {"top1": acc(color_ok), "n": len(rows)},
            "colour+shape (48)": {"top1": acc(combo_ok), "n": len(rows)},
            "held-out combos (of 48)": {"top1": acc(combo_ok, held), "n": int(held.sum())},
        },
        "by_group": {},
        "colour_recall": {c: acc(color_ok, color_true == i) for i, c in enumerate(COLOR_NAMES)},
        "colour_confusions": dict(confusions.most_common(8)),
        "shape_confusions": dict(shape_confusions.most_common(8)),
        "colour_prompt_styles": {},
        "templates": {"shapes_and_combos": EVAL_TEMPLATES, "colours": EVAL_COLOR_TEMPLATES},
    }
    for g in dict.fromkeys(group):
        mask = torch.tensor([x == g for x in group])
        results["by_group"][g] = {
            "shapes": acc(shape_ok, mask),
            "colours": acc(color_ok, mask),
            "combos": acc(combo_ok, mask),
            "held": acc(combo_ok, mask & held),
        }
    for style, templates in COLOR_PROMPT_STYLES.items():
        ok = predict(list(COLOR_NAMES), templates) == color_true
        results["colour_prompt_styles"][style] = acc(ok)
    # For reference only: a training-style prompt (in-distribution wording).
    results["reference_training_prompt"] = {
        "shapes 'a photo of a {}.'": acc(
            predict(list(SHAPES), ("a photo of a {}.",)) == shape_true
        ),
        "combos 'a photo of a {}.'": acc(predict(combo_names, ("a photo of a {}.",)) == combo_true),
    }
    return results


def print_table(res: dict[str, Any]) -> None:
    """Print the results as plain-text tables."""
    print(
        f"\nzero-shot top-1 on {res['n_images']} unseen images, renderer {res['renderer']}, "
        f"seed {res['seed']} (logit_scale {res['logit_scale']})"
    )
    print(f"{'task':28s} {'top1':>7s} {'n':>6s}")
    for task, v in res["tasks"].items():
        print(f"{task:28s} {v['top1']:7.4f} {v['n']:6d}")
    print(f"\n{'group':16s} {'shapes':>7s} {'colours':>8s} {'combos':>7s} {'held':>6s}")
    for g, v in res["by_group"].items():
        print(f"{g:16s} {v['shapes']:7.3f} {v['colours']:8.3f} {v['combos']:7.3f} {v['held']:6.3f}")
    print("\ncolour recall:", ", ".join(f"{c} {v:.3f}" for c, v in res["colour_recall"].items()))
    print("colour confusions (true -> predicted):", res["colour_confusions"] or "none")
    print("shape confusions (true -> predicted):", res["shape_confusions"] or "none")
    print("\ncolour prompt styles (top-1):")
    for style, v in res["colour_prompt_styles"].items():
        print(f"  {style:28s} {v:.4f}")
    print("reference, training-style prompt:")
    for k, v in res["reference_training_prompt"].items():
        print(f"  {k:28s} {v:.4f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--seed", type=int, default=20240917, help="differs from any training seed")
    p.add_argument("--per-combo", type=int, default=2, help="images per combo, size and format")
    p.add_argument("--sizes", default="64,96,128,192,256,384,512")
    p.add_argument("--formats", default="png,jpeg")
    p.add_argument(
        "--renderer",
        choices=("demo", "independent"),
        default="demo",
        help="demo: zsindex.demo (training's renderer); independent: render_eval_shapes.py",
    )
    p.add_argument(
        "--any-rotation",
        action="store_true",
        help="independent renderer: turn squares and crosses freely (diamonds, x's)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    res = evaluate(
        args.model_dir,
        args.seed,
        args.per_combo,
        [int(s) for s in args.sizes.split(",")],
        [f.strip().lower() for f in args.formats.split(",")],
        args.renderer,
        args.any_rotation,
    )
    res["seconds"] = round(time.time() - t0, 1)
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
