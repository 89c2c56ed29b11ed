#!/usr/bin/env python
"""HTTP classify throughput and latency with dynamic micro-batching on and off.

Starts two real uvicorn servers (``python -m zsindex.service``) on 127.0.0.1 and random free
ports over one SQLite store — one with ``ZSINDEX_BATCHING=1``, one with ``ZSINDEX_BATCHING=0`` —
and drives each, in turn, with a closed loop of N concurrent httpx clients (async) at
concurrency 4/8/16. Each level is bounded by a request count and a time cap. Prints throughput,
p50/p95/p99 latency, the mean images per encoder forward (from ``/metrics``), and the on/off
throughput ratio; ``--write`` also writes the tables to ``benchmarks/out/service.md``.

Example::

    .venv/bin/python benchmarks/bench_service.py --write

``--model random-tiny`` uses a random-weight model of zsindex-tiny's architecture (for
development before the trained weights exist; the timing is the same, the labels are noise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"


@dataclass
class Level:
    mode: str
    concurrency: int
    completed: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))


def random_tiny(folder: Path) -> str:
    """A random-weight CLIP with zsindex-tiny's default architecture (train_tiny_model.py)."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4,
                       "head_width": 32, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4,
                     "layers": 3, "mlp_ratio": 4.0},
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    pre = {
        "size": 64,
        "mode": "RGB",
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": pre})
    )
    return f"local-dir:{folder}"


def make_images(n: int, size: int) -> list[bytes]:
    from zsindex.demo import encode_image, render_shape
    from zsindex.labels.demo_vocab import COLOR_NAMES, SHAPES

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = render_shape(SHAPES[i % len(SHAPES)], COLOR_NAMES[i % len(COLOR_NAMES)], size, rng)
        out.append(encode_image(img, "png"))
    return out


def start_server(env: dict[str, str], batching: bool) -> tuple[subprocess.Popen[bytes], str]:
    from zsindex.service.server import free_port

    port = free_port()
    proc_env = {**env, "ZSINDEX_BATCHING": "1" if batching else "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsindex.service", "--host", "127.0.0.1", "--port", str(port)],
        env=proc_env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server did not become ready")


def batch_stats(base: str) -> tuple[float, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    total = re.search(r"^zsindex_batch_images_sum ([0-9.e+]+)$", text, re.M)
    count = re.search(r"^zsindex_batch_images_count ([0-9.e+]+)$", text, re.M)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def multipart_body(
    labelset: str, images: list[tuple[str, bytes]], boundary: str = "zsbenchboundary"
) -> tuple[bytes, str]:
    """A ready-made multipart/form-data body (the bench pre-builds bodies so the client's own
    CPU cost per request stays small: the client shares the 2 cores with the server)."""
    parts = []
    for name, value in (("labelset", labelset), ("k", "3")):
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        )
    for filename, data in images:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


async def drive(
    base: str,
    images: list[bytes],
    labelset: str,
    concurrency: int,
    requests: int,
    max_seconds: float,
    per_request: int,
) -> tuple[int, int, float, list[float]]:
    latencies: list[float] = []
    errors = 0
    issued = 0
    bodies = [
        multipart_body(
            labelset,
            [(f"{i}-{j}.png", images[(i + j) % len(images)]) for j in range(per_request)],
        )
        for i in range(len(images))
    ]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker(w: int) -> None:
            nonlocal issued, errors
            i = w
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                body, content_type = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = await http.post(
                        "/v1/classify", content=body, headers={"content-type": content_type}
                    )
                    ok = r.status_code == 200 and len(r.json()) == per_request
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    errors += 1
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(latencies), errors, elapsed, latencies


def drive_threads(
    base: str,
    images: list[bytes],
    labelset: str,
    concurrency: int,
    requests: int,
    max_seconds: float,
    per_request: int,
) -> tuple[int, int, float, list[float]]:
    """Closed loop of ``concurrency`` threads, each with its own keep-alive ``httpx.Client``."""
    import threading

    bodies = [
        multipart_body(
            labelset,
            [(f"{i}-{j}.png", images[(i + j) % len(images)]) for j in range(per_request)],
        )
        for i in range(len(images))
    ]
    latencies: list[float] = []
    errors = [0]
    issued = [0]
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + max_seconds

    def worker(w: int) -> None:
        i = w
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.perf_counter() < deadline:
                with lock:
                    if issued[0] >= requests:
                        return
                    issued[0] += 1
                body, content_type = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = http.post(
                        "/v1/classify", content=body, headers={"content-type": content_type}
                    )
                    ok = r.status_code == 200 and len(r.json()) == per_request
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1
                i += concurrency

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), errors[0], time.perf_counter() - start, latencies


def run_driver(
    args: argparse.Namespace,
    base: str,
    images: list[bytes],
    concurrency: int,
    requests: int,
    max_seconds: float,
) -> tuple[int, int, float, list[float]]:
    if args.client == "httpx-async":
        return asyncio.run(
            drive(
                base, images, "bench", concurrency, requests, max_seconds, args.images_per_request
            )
        )
    return drive_threads(
        base, images, "bench", concurrency, requests, max_seconds, args.images_per_request
    )


def run_round(
    base: str, args: argparse.Namespace, images: list[bytes], concurrency: int
) -> tuple[int, int, float, list[float], float, float]:
    s0, c0 = batch_stats(base)
    completed, errors, seconds, lat = run_driver(
        args,
        base,
        images,
        concurrency,
        max(1, args.requests // args.rounds),
        args.max_seconds / args.rounds,
    )
    s1, c1 = batch_stats(base)
    return completed, errors, seconds, lat, s1 - s0, c1 - c0


def run_level(
    servers: dict[str, str], args: argparse.Namespace, images: list[bytes], concurrency: int
) -> list[Level]:
    """Alternate short rounds (off, on, off, on, ...) so background load hits both alike."""
    levels = {mode: Level(mode, concurrency, 0, 0, 0.0, [], 0.0) for mode in servers}
    forwards = dict.fromkeys(servers, 0.0)
    for _ in range(args.rounds):
        for mode, base in servers.items():
            completed, errors, seconds, lat, images_sum, count = run_round(
                base, args, images, concurrency
            )
            lv = levels[mode]
            lv.completed += completed
            lv.errors += errors
            lv.seconds += seconds
            lv.latencies_ms.extend(lat)
            lv.mean_batch += images_sum
            forwards[mode] += count
    for mode, lv in levels.items():
        lv.mean_batch = lv.mean_batch / forwards[mode] if forwards[mode] else float("nan")
    return list(levels.values())


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    threads = os.environ.get("ZSINDEX_TORCH_THREADS") or f"torch default ({os.cpu_count()})"
    omp = os.environ.get("OMP_WAIT_POLICY") or "PASSIVE (the service default)"
    return (
        f"{os.cpu_count()}-core {platform.machine()} CPU ({cpu}), Python "
        f"{platform.python_version()}, torch {torch.__version__}; servers: intra-op threads "
        f"{threads}, OMP_WAIT_POLICY {omp}"
    )


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def render(levels: list[Level], args: argparse.Namespace, model: str, env_note: str) -> str:
    lines = [
        "| batching | clients | requests | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms "
        "| images/forward |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        lines.append(
            f"| {lv.mode} | {lv.concurrency} | {lv.completed} | {lv.errors} | "
            f"{lv.throughput:.1f} | {lv.pct(50):.1f} | {lv.pct(95):.1f} | {lv.pct(99):.1f} | "
            f"{lv.mean_batch:.2f} |"
        )
    ratios = []
    for c in args.concurrency:
        on = next(lv for lv in levels if lv.mode == "on" and lv.concurrency == c)
        off = next(lv for lv in levels if lv.mode == "off" and lv.concurrency == c)
        ratio = on.throughput / off.throughput if off.throughput else float("nan")
        ratios.append(f"| {c} | {on.throughput:.1f} | {off.throughput:.1f} | **{ratio:.2f}×** |")
    return "\n".join(
        [
            "| clients | on (req/s) | off (req/s) | on/off |",
            "|---:|---:|---:|---:|",
            *ratios,
            "",
            *lines,
            "",
            f"Model `{model}`; client {args.client}; "
            f"{args.images_per_request} image(s) per request "
            f"({args.image_size}×{args.image_size} PNG); up to {args.requests} requests or "
            f"{args.max_seconds:g} s per level and mode, in {args.rounds} alternating off/on "
            f"rounds, after {args.warmup} warm-up requests; {env_note}.",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        default="zsindex-tiny",
        help="zsindex-tiny (default) or random-tiny (random weights, same architecture)",
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--requests", type=int, default=600, help="requests per level (cap)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="time cap per level and mode")
    p.add_argument("--rounds", type=int, default=4, help="alternating off/on rounds per level")
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--images-per-request", type=int, default=1)
    p.add_argument(
        "--client",
        choices=("httpx-threads", "httpx-async"),
        default="httpx-threads",
        help="load generator: one keep-alive httpx.Client per thread (default; about half the "
        "client CPU of httpx.AsyncClient here), or httpx.AsyncClient",
    )
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--device", default="cpu", help="the servers' ZSINDEX_DEVICE (cuda on a GPU)")
    p.add_argument(
        "--write", action="store_true", help="write the tables to benchmarks/out/service.md"
    )
    args = p.parse_args()

    from zsindex.client import Client
    from zsindex.config import Settings

    with tempfile.TemporaryDirectory(prefix="zsbench-") as tmp:
        root = Path(tmp)
        model = random_tiny(root / "model") if args.model == "random-tiny" else args.model
        db = f"sqlite:///{root / 'bench.sqlite3'}"
        settings = Settings(
            home=root / "home", database_url=db, model=model, pretrained=None, device="cpu"
        )
        with Client.local(settings=settings) as admin:
            admin.add_labelset("bench", plugin="shapes", model=model)
        env = {
            **os.environ,
            "ZSINDEX_HOME": str(root / "home"),
            "ZSINDEX_DATABASE_URL": db,
            "ZSINDEX_DEVICE": args.device,
            "ZSINDEX_API_KEYS": API_KEY,
            "ZSINDEX_MAX_CONCURRENCY": "256",
        }
        images = make_images(64, args.image_size)
        load_before = load_avg()
        servers = {mode: start_server(env, mode == "on") for mode in ("on", "off")}
        levels: list[Level] = []
        try:
            for _proc, base in servers.values():  # warm up: model load, caches
                run_driver(args, base, images, 4, args.warmup, 60)
            bases = {mode: servers[mode][1] for mode in ("off", "on")}
            for c in args.concurrency:
                for lv in run_level(bases, args, images, c):
                    levels.append(lv)
                    print(
                        f"batching {lv.mode:3} c={c:2}: {lv.throughput:7.1f} req/s, "
                        f"p50 {lv.pct(50):6.1f} p95 {lv.pct(95):6.1f} p99 {lv.pct(99):6.1f} ms, "
                        f"{lv.errors} errors, {lv.mean_batch:.2f} images/forward",
                        flush=True,
                    )
        finally:
            for proc, _ in servers.values():
                proc.terminate()
            for proc, _ in servers.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        note = machine() + f"; load average during the run {load_before} → {load_avg()}"
        table = render(levels, args, args.model, note)
        print()
        print(table)
        for c in args.concurrency:
            on = next(lv for lv in levels if lv.mode == "on" and lv.concurrency == c)
            off = next(lv for lv in levels if lv.mode == "off" and lv.concurrency == c)
            print(f"c={c}: on/off throughput ratio {on.throughput / max(off.throughput, 1e-9):.2f}")
        if args.write:
            out = ROOT / "benchmarks" / "out" / "service.md"
            out.parent.mkdir(parents=True, exist_ok=True)
            command = " ".join([".venv/bin/python", "benchmarks/bench_service.py", *sys.argv[1:]])
            out.write_text(
                "# HTTP service: dynamic micro-batching on vs off\n\n"
                f"Run `{command}`"
                f" on {time.strftime('%Y-%m-%d')}; machine: {note}.\n\n"
                "Two uvicorn servers (`python -m zsindex.service`, batching on / off) over one "
                "SQLite store, driven in turn by a closed loop of httpx clients (one per thread, "
                "keep-alive) on the same machine (the clients share the 2 cores). Throughput "
                "counts successful requests; latency is per request as the client sees it.\n\n"
                + table
                + "\n"
            )
            print(f"wrote {out}")
        if statistics.fmean([lv.errors for lv in levels]) > 0:
            sys.exit(1)


if __name__ == "__main__":
    main()
