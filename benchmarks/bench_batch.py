"""Batch benchmark (issue 17): the local engine vs a plain per-image loop, Ray with 1 and 2
workers, and classifying saved embeddings vs re-encoding — side by side in one run.

Data: ``--images`` rendered shape/colour JPEGs of ``--size`` px (the demo renderer), against
label sets ``shapes`` and ``colors`` of the shipped ``zsindex-tiny`` in a fresh SQLite store.

- ``loop``: the plain per-image loop a user would write — ``Client.classify([path])`` for each
  image and each label set (one forward per image per label set);
- ``local``: ``zsindex.batch.run(engine="local")`` — parallel decode overlapped with batched
  encoding, each image encoded once for both label sets, Parquet parts committed;
- ``ray-1``, ``ray-2``: ``engine="ray"`` on a local Ray cluster (``num_cpus`` = this machine's
  cores) with 1 and 2 actors (0.75 logical CPU each, one torch thread), per worker too;
- ``embeddings``: ``batch --embeddings`` over the embeddings ``local`` saved vs ``local``
  re-encoding the same images.

Each engine runs twice, on the first half of the images and on all of them: "wall" is all the
images over the full run's seconds (start-up included: a fresh backend, Ray's actors), and
"marginal" is the second half over the difference of the two runs (start-up cancels; the
rate a long job settles at). Every engine's predictions are checked equal (labels exactly,
probabilities within 1e-6) to the loop's. ::

    .venv/bin/python benchmarks/bench_batch.py                 # 2,000 images of 160 px
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


def random_vit_b_32(folder: Path) -> str:
    """open_clip's ViT-B-32 with random weights in the local-dir layout (no download): the
    real architecture's encoding cost, for the scaling and re-encoding comparisons."""
    import json as _json

    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    config = open_clip.get_model_config("ViT-B-32")
    (folder / "open_clip_config.json").write_text(_json.dumps({"model_cfg": config}))
    return f"local-dir:{folder}"


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
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--loop-images", type=int, default=300, help="images for the slow loop")
    parser.add_argument("--part-size", type=int, default=250)
    parser.add_argument(
        "--model",
        choices=("zsindex-tiny", "vit-b-32-random"),
        default="zsindex-tiny",
        help="the shipped tiny model, or open_clip's ViT-B-32 with random weights",
    )
    parser.add_argument(
        "--archive-rows",
        type=int,
        default=200_000,
        help="stored embeddings at archive scale: the saved rows repeated under new names",
    )
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
    model = "zsindex-tiny" if args.model == "zsindex-tiny" else random_vit_b_32(tmp / "vit")
    for name in ("shapes", "colors"):
        client.add_labelset(name, plugin=name, model=model)
    paths = render(tmp / "images", args.images, args.size)
    labels = ["shapes", "colors"]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
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

    half = args.images // 2
    lists = {}
    for n in (half, args.images):
        lists[n] = tmp / f"list-{n}.csv"
        lists[n].write_text("path\n" + "".join(f"{p}\n" for p in paths[:n]))

    def timed_run(name: str, n: int, inputs: list[str], **kw: Any) -> float:
        out = tmp / f"{name}-{n}"
        start = time.perf_counter()
        run(inputs, labels, out, settings=settings, **{"part_size": args.part_size, **kw})
        return time.perf_counter() - start

    def measure(name: str, inputs: dict[int, list[str]], **kw: Any) -> dict[str, Any]:
        """Wall images/s at full size, and the marginal rate (half → full): start-up cancels."""
        t_half = timed_run(name, half, inputs[half], **kw)
        t_full = timed_run(name, args.images, inputs[args.images], **kw)
        marginal = (args.images - half) / (t_full - t_half) if t_full > t_half else None
        return {
            "images_per_s": args.images / t_full,
            "marginal_images_per_s": marginal,
            "seconds": t_full,
        }

    image_inputs = {n: [str(lists[n])] for n in lists}
    results["local"] = measure("local", image_inputs, save_embeddings=True)
    local_rows = rows_of(tmp / f"local-{args.images}")
    by_path = {(k[0], str(tmp / "images" / Path(k[1]).name)): v for k, v in local_rows.items()}
    check_equal({k: v for k, v in by_path.items() if k in loop_rows}, loop_rows, "local")
    results["local_vs_loop"] = results["local"]["images_per_s"] / results["loop"]["images_per_s"]

    emb_inputs = {n: [str(tmp / f"local-{n}" / "embeddings")] for n in lists}
    results["embeddings"] = measure("embeddings", emb_inputs, embeddings=True)
    check_equal(rows_of(tmp / f"embeddings-{args.images}"), local_rows, "embeddings")
    results["embeddings_vs_reencode"] = (
        results["embeddings"]["images_per_s"] / results["local"]["images_per_s"]
    )
    if results["embeddings"]["marginal_images_per_s"] and results["local"]["marginal_images_per_s"]:
        results["embeddings_vs_reencode_marginal"] = (
            results["embeddings"]["marginal_images_per_s"]
            / results["local"]["marginal_images_per_s"]
        )

    # At archive scale: the saved rows repeated under new source names, so the per-row cost
    # (search, rows, Parquet) dominates a job's fixed cost (store, label sets, manifest).
    import pyarrow as pa
    import pyarrow.parquet as pq

    saved = pq.read_table(tmp / f"local-{args.images}" / "embeddings").filter(
        pa.compute.is_valid(pa.compute.field("embedding"))
    )
    big = tmp / "archive-embeddings"
    big.mkdir()
    copies = max(1, args.archive_rows // max(saved.num_rows, 1))
    for c in range(copies):
        names = pa.array([f"copy{c}/{x}" for x in saved.column("source").to_pylist()])
        pq.write_table(saved.set_column(0, "source", names), big / f"part-{c:05d}.parquet")
    rows = copies * saved.num_rows
    seconds = timed_run("archive", rows, [str(big)], embeddings=True, part_size=1000)  # the default
    results["embeddings_archive"] = {"rows": rows, "images_per_s": rows / seconds}
    results["embeddings_archive_vs_reencode"] = (
        results["embeddings_archive"]["images_per_s"] / results["local"]["images_per_s"]
    )

    if not args.no_ray:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                r = measure(
                    f"ray{workers}",
                    image_inputs,
                    engine="ray",
                    ray=RayOptions(workers=workers, num_cpus_per_worker=0.75, batch_size=32),
                )
                check_equal(rows_of(tmp / f"ray{workers}-{args.images}"), local_rows, "ray")
                r["marginal_per_worker"] = (r["marginal_images_per_s"] or 0) / workers
                results[f"ray-{workers}"] = r
        finally:
            ray.shutdown()
        r1, r2 = results["ray-1"], results["ray-2"]
        if r1["marginal_images_per_s"] and r2["marginal_images_per_s"]:
            results["ray_2_vs_1_marginal"] = (
                r2["marginal_images_per_s"] / r1["marginal_images_per_s"]
            )
    results["load_after"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(
        f"machine: {results['machine']}; {args.model}; {args.images} images of {args.size} px; "
        f"load {results['load_before']:.1f} → {results['load_after']:.1f}"
    )
    print(
        f"plain per-image loop     {results['loop']['images_per_s']:8.1f} images/s "
        f"({len(sample)} images × {len(labels)} label sets)"
    )

    def line(name: str, r: dict[str, Any], extra: str = "") -> None:
        marginal = r.get("marginal_images_per_s") or 0
        print(f"{name:24s} {r['images_per_s']:8.1f} images/s wall, {marginal:8.1f} marginal{extra}")

    line("local engine", results["local"], f"  (wall ×{results['local_vs_loop']:.1f} the loop)")
    line(
        "stored embeddings",
        results["embeddings"],
        f"  (wall ×{results['embeddings_vs_reencode']:.1f} re-encoding, marginal "
        f"×{results.get('embeddings_vs_reencode_marginal', 0):.1f})",
    )
    arch = results["embeddings_archive"]
    print(
        f"stored embeddings, {arch['rows']:,} rows {arch['images_per_s']:8.1f} images/s wall  "
        f"(×{results['embeddings_archive_vs_reencode']:.1f} re-encoding's wall rate)"
    )
    for workers in (1, 2):
        r = results.get(f"ray-{workers}")
        if r:
            line(f"ray, {workers} worker(s)", r, f"  ({r['marginal_per_worker']:.1f} per worker)")
    if "ray_2_vs_1_marginal" in results:
        print(f"ray 2 workers / 1 worker (marginal): ×{results['ray_2_vs_1_marginal']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
