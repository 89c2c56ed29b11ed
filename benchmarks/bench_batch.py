"""Batch benchmark (issue 17): the local engine vs a plain per-image loop, Ray with 1 and 2
workers, and classifying saved embeddings vs re-encoding — side by side in one run.

Data: ``--images`` rendered shape/colour JPEGs of ``--size`` px (the demo renderer), against
label sets ``shapes`` and ``colors`` of the shipped ``zsindex-tiny`` in a fresh SQLite store.

- ``loop``: the plain per-image loop a user would write — ``Client.classify([path])`` for each
  image and each label set (one forward per image per label set);
- ``local``: ``zsindex.batch.run(engine="local")`` — parallel decode overlapped with batched
  encoding, each image encoded once for both label sets, Parquet parts committed;
- ``ray-1``, ``ray-2``: ``engine="ray"`` on a local Ray cluster (``num_cpus`` = this machine's
  cores) with 1 and 2 actors (0.75 logical CPU each, one torch thread); reported as wall
  images/s (cluster already up, actor start-up included) and steady images/s (from the first
  committed part to the last), per worker too;
- ``embeddings``: ``batch --embeddings`` over the embeddings ``local`` saved vs ``local``
  re-encoding the same images.

Every engine's predictions are checked equal (labels exactly, probabilities within 1e-6) to the
loop's. ::

    .venv/bin/python benchmarks/bench_batch.py                 # 1,000 images of 160 px
    .venv/bin/python benchmarks/bench_batch.py --images 300 --no-ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def render(folder: Path, n: int, size: int) -> list[Path]:
    from zsindex.demo.render import render_dataset

    folder.mkdir(parents=True)
    paths = []
    for i, sample in enumerate(render_dataset(n, size, seed=11)):
        path = folder / f"{i:06d}.jpg"
        sample.image.save(path, quality=90)
        paths.append(path)
    return paths


def rows_of(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    import pyarrow.dataset as ds

    table = ds.dataset(out / "predictions", format="parquet").to_table()
    return {(r["labelset"], r["source"]): r for r in table.to_pylist()}


def check_equal(
    got: dict[tuple[str, str], dict[str, Any]], want: dict[Any, Any], what: str
) -> None:
    assert set(got) == set(want), f"{what}: other images"
    for key, row in got.items():
        ref = want[key]
        assert row["labels"] == ref["labels"], f"{what}: labels differ for {key}"
        worst = max(
            abs(a - b) for a, b in zip(row["probabilities"], ref["probabilities"], strict=True)
        )
        assert worst <= 1e-6, f"{what}: probabilities differ by {worst} for {key}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--loop-images", type=int, default=300, help="images for the slow loop")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from zsindex.batch import RayOptions, run
    from zsindex.client import Client
    from zsindex.config import Settings
    from zsindex.local import LocalBackend

    tmp = Path(tempfile.mkdtemp(prefix="zsindex-bench-batch-"))
    settings = Settings(home=tmp / "home", device="cpu", model="zsindex-tiny", pretrained=None)
    client = Client.from_backend(LocalBackend(settings))
    for name in ("shapes", "colors"):
        client.add_labelset(name, plugin=name)
    paths = render(tmp / "images", args.images, args.size)
    labels = ["shapes", "colors"]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": os.getloadavg()[0],
        "images": args.images,
        "size": args.size,
    }

    # The plain loop: one classify call per image per label set (on a subset: it is slow).
    sample = paths[: args.loop_images]
    for name in labels:  # warm: model and label sets loaded
        client.classify([str(sample[0])], labelset=name)
    start = time.perf_counter()
    loop_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sample:
        for name in labels:
            r = client.classify([str(path)], labelset=name)[0]
            loop_rows[(name, str(path))] = {
                "labels": [p.label for p in r.predictions],
                "probabilities": [p.probability for p in r.predictions],
            }
    loop_s = time.perf_counter() - start
    results["loop"] = {"images_per_s": len(sample) / loop_s, "images": len(sample)}
    client.close()

    def timed_run(out: Path, inputs: list[str], **kw: Any) -> dict[str, Any]:
        marks: list[tuple[int, float]] = []
        start = time.perf_counter()
        summary = run(
            inputs,
            labels,
            out,
            settings=settings,
            part_size=100,
            on_progress=lambda done, total, s: marks.append((done, s)),
            **kw,
        )
        wall = time.perf_counter() - start
        steady = None
        if len(marks) >= 2:
            (d0, s0), (d1, s1) = marks[0], marks[-1]
            steady = (d1 - d0) / (s1 - s0) if s1 > s0 else None
        return {
            "images_per_s": summary.images / wall,
            "steady_images_per_s": steady,
            "seconds": wall,
        }

    local_out = tmp / "local"
    results["local"] = timed_run(local_out, [str(tmp / "images")], save_embeddings=True)
    local_rows = rows_of(local_out)
    check_equal({k: v for k, v in local_rows.items() if k in loop_rows}, loop_rows, "local")
    results["local_vs_loop"] = results["local"]["images_per_s"] / results["loop"]["images_per_s"]

    emb_out = tmp / "from-embeddings"
    results["embeddings"] = timed_run(emb_out, [str(local_out / "embeddings")], embeddings=True)
    check_equal(rows_of(emb_out), local_rows, "embeddings")
    results["embeddings_vs_reencode"] = (
        results["embeddings"]["images_per_s"] / results["local"]["images_per_s"]
    )

    if not args.no_ray:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                out = tmp / f"ray-{workers}"
                r = timed_run(
                    out,
                    [str(tmp / "images")],
                    engine="ray",
                    ray=RayOptions(workers=workers, num_cpus_per_worker=0.75, batch_size=32),
                )
                check_equal(rows_of(out), local_rows, f"ray-{workers}")
                r["steady_per_worker"] = (r["steady_images_per_s"] or 0) / workers
                results[f"ray-{workers}"] = r
        finally:
            ray.shutdown()
        r1, r2 = results["ray-1"], results["ray-2"]
        if r1["steady_images_per_s"] and r2["steady_images_per_s"]:
            results["ray_2_vs_1_steady"] = r2["steady_images_per_s"] / r1["steady_images_per_s"]
    results["load_after"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(
        f"machine: {results['machine']}; {args.images} images of {args.size} px; "
        f"load {results['load_before']:.1f} → {results['load_after']:.1f}"
    )
    print(
        f"plain per-image loop     {results['loop']['images_per_s']:8.1f} images/s "
        f"({len(sample)} images × {len(labels)} label sets)"
    )
    print(
        f"local engine             {results['local']['images_per_s']:8.1f} images/s "
        f"(×{results['local_vs_loop']:.1f} the loop)"
    )
    print(
        f"stored embeddings        {results['embeddings']['images_per_s']:8.1f} images/s "
        f"(×{results['embeddings_vs_reencode']:.1f} re-encoding)"
    )
    for workers in (1, 2):
        r = results.get(f"ray-{workers}")
        if r:
            print(
                f"ray, {workers} worker(s)         {r['images_per_s']:8.1f} images/s wall, "
                f"{r['steady_images_per_s'] or 0:8.1f} steady, "
                f"{r['steady_per_worker']:.1f} per worker"
            )
    if "ray_2_vs_1_steady" in results:
        print(f"ray 2 workers / 1 worker (steady): ×{results['ray_2_vs_1_steady']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
