"""A one-image ``zsindex classify`` in a fresh process: open_clip-built model vs plain (issue 20).

Each run is the real CLI (``zsindex.cli.main:main``, as the ``zsindex`` script runs it) in a
fresh Python process, classifying one PNG against a label set registered once beforehand:

- ``open_clip``: today's path — the model and its preprocess built by open_clip (which imports
  torchvision, ``torch._dynamo`` and timm); forced with
  ``zsindex.encoders.loading.use_plain_models(False)`` before the command runs;
- ``plain``: the default — a standard CLIP built with torch alone
  (:mod:`zsindex.encoders.plain_model`).

Runs alternate (open_clip, plain, open_clip, …) after one warm-up of each, so both see the same
machine load. Per run: wall seconds (spawn to exit), CPU seconds (user + sys of the child), peak
RSS (the child's own ``VmHWM``, read at exit) and whether open_clip / torchvision / timm /
``torch._dynamo`` were imported. Every run's output must be byte-identical, between the two paths
and across runs; the script fails otherwise. Medians and the ratio are printed::

    .venv/bin/python benchmarks/bench_one_image.py                  # zsindex-tiny, 7 rounds
    .venv/bin/python benchmarks/bench_one_image.py --rounds 9 --model local-dir:/path/to/clip
    .venv/bin/python benchmarks/bench_one_image.py --model ViT-B-32 --pretrained weights.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEAVY = ("open_clip", "torchvision", "timm", "torch._dynamo")
MODES = ("open_clip", "plain")

# The child: the CLI's own entry point, after choosing the path; at exit it records its peak
# RSS and which heavy modules it imported.
DRIVER = """
import atexit, json, sys
mode, report = sys.argv[1], sys.argv[2]
def _report():
    status = open("/proc/self/status").read()
    hwm = int(status.split("VmHWM:")[1].split()[0]) / 1024
    heavy = {m: m in sys.modules for m in __HEAVY__}
    open(report, "w").write(json.dumps({"peak_rss_mb": hwm, "imported": heavy}))
atexit.register(_report)
if mode == "open_clip":
    from zsindex.encoders.loading import use_plain_models
    use_plain_models(False)
sys.argv = ["zsindex"] + sys.argv[3:]
from zsindex.cli.main import main
main()
""".replace("__HEAVY__", repr(HEAVY))


def make_image(path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (320, 240), (200, 200, 205))
    ImageDraw.Draw(img).ellipse((100, 60, 220, 180), fill=(220, 30, 30))
    img.save(path)


def run_once(
    mode: str, env: dict[str, str], image: Path, labelset: str, tmp: Path
) -> dict[str, Any]:
    report = tmp / f"report-{mode}.json"
    report.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-c",
        DRIVER,
        mode,
        str(report),
        "classify",
        str(image),
        "--labels",
        labelset,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed ({proc.returncode}):\n{proc.stderr.decode()}")
    row: dict[str, Any] = json.loads(report.read_text())
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    row.update(wall_s=wall, cpu_s=cpu, output=proc.stdout.decode())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="runs of each path (after warm-up)")
    parser.add_argument("--model", default="zsindex-tiny", help="model of the label set")
    parser.add_argument("--pretrained", help="its pretrained tag or weights file")
    parser.add_argument("--image", type=Path, help="image to classify (default: a drawn PNG)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="zs-one-image-"))
    try:
        env = {**os.environ, "ZSINDEX_HOME": str(tmp / "home"), "ZSINDEX_MODEL": args.model}
        env.pop("ZSINDEX_DATABASE_URL", None)
        env.pop("ZSINDEX_PRETRAINED", None)
        if args.pretrained:
            env["ZSINDEX_PRETRAINED"] = args.pretrained
        image = args.image or tmp / "one.png"
        if args.image is None:
            make_image(image)
        zsindex = str(Path(sys.executable).with_name("zsindex"))
        subprocess.run(
            [zsindex, "labels", "add", "shapes", "--plugin", "shapes"],
            env=env,
            check=True,
            capture_output=True,
        )
        rows: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for mode in MODES:  # warm-up: page cache, .pyc files
            run_once(mode, env, image, "shapes", tmp)
        for _ in range(args.rounds):
            for mode in MODES:
                rows[mode].append(run_once(mode, env, image, "shapes", tmp))
        outputs = {r["output"] for m in MODES for r in rows[m]}
        print(
            f"model {args.model}, image {image.name}, {args.rounds} runs per path, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
        )
        print(
            f"{'path':<10} {'wall s (median, min-max)':>26} {'cpu s':>7} {'peak RSS MB':>12}"
            "  imported"
        )
        med: dict[str, dict[str, float]] = {}
        for mode in MODES:
            walls = [r["wall_s"] for r in rows[mode]]
            cpus = [r["cpu_s"] for r in rows[mode]]
            rss = [r["peak_rss_mb"] for r in rows[mode]]
            med[mode] = {
                "wall": statistics.median(walls),
                "cpu": statistics.median(cpus),
                "rss": statistics.median(rss),
            }
            heavy = sorted({m for r in rows[mode] for m, on in r["imported"].items() if on})
            print(
                f"{mode:<10} {med[mode]['wall']:>10.2f} ({min(walls):.2f}-{max(walls):.2f})"
                f"      {med[mode]['cpu']:>7.2f} {med[mode]['rss']:>12.0f}  "
                f"{', '.join(heavy) or 'none of ' + ', '.join(HEAVY)}"
            )
        old, new = med["open_clip"], med["plain"]
        print(
            f"plain vs open_clip: wall {old['wall'] / new['wall']:.2f}x faster, "
            f"cpu {old['cpu'] / new['cpu']:.2f}x less, RSS {old['rss'] / new['rss']:.2f}x less"
        )
        print("output identical across all runs of both paths:", len(outputs) == 1)
        print(next(iter(outputs)), end="")
        if len(outputs) != 1:
            raise SystemExit("outputs differ:\n" + "\n---\n".join(sorted(outputs)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
