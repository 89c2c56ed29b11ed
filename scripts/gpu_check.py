#!/usr/bin/env python
"""``make gpu-check``: the GPU paths, checked and measured in one run of at most 8 minutes.

On a machine without a CUDA GPU it says so and exits 0, having done no GPU work and written
nothing. On a GPU machine it:

1. installs a FAISS GPU build when the importable faiss is CPU-only: the registry's build for the
   CUDA the driver supports (``faiss-gpu`` — CUDA 12.6+, the same version as the installed
   ``faiss-cpu`` —, else ``faiss-gpu-cu12`` for CUDA 12.1+, ``faiss-gpu-cu11`` for CUDA 11),
   into ``.gpu-check/site`` (put first on ``PYTHONPATH`` for the steps below; the virtual
   environment itself is not touched). ``--wheels DIR`` installs from a folder of wheels
   instead (a GPU machine without a registry); ``--no-install`` skips this step;
2. runs every ``gpu``-marked test (``tests/gpu`` and the GPU tests of ``tests/index`` and
   ``tests/classify``), counting
   passes, failures and skips apart (a skip is never a pass);
3. measures, each step within its own time budget: FAISS GPU flat inner product (fp32 and fp16
   storage) against torch fp16 matmul + softmax + top-k at 1M × 512 with 1,024 queries, and
   zsindex's own GPU index at the same size; image-encoding throughput (fp32 and fp16 autocast;
   ViT-B-32 architecture with random weights, and zsindex-tiny end to end from PNG bytes); text
   registration throughput (zsindex-tiny, prompts per second); service throughput
   (``benchmarks/bench_service.py`` on the GPU);
4. writes what it found into ``benchmarks/RESULTS.md`` between the ``gpu-check`` markers
   (appended the first time), with the GPU, driver, CUDA and package versions.

Exit status: 0 when every step that ran passed (or there is no GPU), 1 when a test failed or a
step broke.

    .venv/bin/python scripts/gpu_check.py            # what `make gpu-check` runs
    .venv/bin/python scripts/gpu_check.py --no-bench # tests only
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
WORK = ROOT / ".gpu-check"
START_MARK = "<!-- gpu-check:start -->"
END_MARK = "<!-- gpu-check:end -->"
TOTAL_BUDGET_S = 8 * 60
INSTALL_BUDGET_S = 150
TESTS_BUDGET_S = 120
SERVICE_BUDGET_S = 75
GPU_TESTS = ["tests"]
"""Where the ``gpu``-marked tests are collected from (``tests/gpu`` and those beside the code
they test, e.g. ``tests/index``)."""

# -- finding a GPU (without importing torch on a machine that has none) ----------------------------


def nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def find_gpu() -> dict[str, str] | None:
    """The first CUDA GPU torch can use, or ``None`` (then nothing imports torch)."""
    if nvidia_smi("-L") is None and not glob.glob("/dev/nvidia[0-9]*"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info = {
        "name": props.name,
        "memory_gib": f"{props.total_memory / 2**30:.0f}",
        "capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__,
        "torch_cuda": str(torch.version.cuda),
        "count": str(torch.cuda.device_count()),
    }
    smi = nvidia_smi() or ""
    driver = re.search(r"Driver Version:\s*([\d.]+)", smi)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", smi)
    info["driver"] = driver.group(1) if driver else "unknown"
    info["driver_cuda"] = cuda.group(1) if cuda else "unknown"
    return info


# -- FAISS GPU -------------------------------------------------------------------------------------

PROBE = (
    "import faiss, json; print(json.dumps({'version': faiss.__version__, 'gpus': "
    "faiss.get_num_gpus() if hasattr(faiss, 'StandardGpuResources') else 0}))"
)


def probe_faiss(env: dict[str, str]) -> dict[str, Any] | None:
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
        )
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    try:
        found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return found


def faiss_candidates(driver_cuda: str, faiss_version: str) -> list[str]:
    """The registry's FAISS GPU builds that this driver can run, best first."""
    try:
        major, minor = (int(x) for x in driver_cuda.split(".")[:2])
    except ValueError:
        major, minor = 12, 0  # unknown: try the CUDA 12 builds
    out = []
    if (major, minor) >= (12, 6):
        out.append(f"faiss-gpu=={faiss_version}")  # CUDA 12.6+ runtime wheels, same API
    if major >= 12:
        out.append("faiss-gpu-cu12")
    if major == 11:
        out.append("faiss-gpu-cu11")
    return out


def install_faiss_gpu(args: argparse.Namespace, gpu: dict[str, str], log: list[str]) -> str | None:
    """A ``PYTHONPATH`` entry holding a working FAISS GPU build, or ``None`` (already one, or
    none could be installed; ``log`` says which)."""
    here = probe_faiss(dict(os.environ))
    if here and here["gpus"] > 0:
        log.append(f"faiss {here['version']} already has GPU support ({here['gpus']} GPU(s))")
        return None
    if args.no_install:
        log.append("faiss is CPU-only and --no-install was given: FAISS GPU steps skip")
        return None
    import numpy

    version = here["version"] if here else "1.15.1"
    site = WORK / "site"
    deadline = time.perf_counter() + INSTALL_BUDGET_S
    for spec in faiss_candidates(gpu["driver_cuda"], version):
        left = deadline - time.perf_counter()
        if left < 20:
            log.append(f"no time left to try {spec}")
            break
        shutil.rmtree(site, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(site),
            spec,
            f"numpy=={numpy.__version__}",  # the environment's own numpy, not a newer one
        ]
        if args.wheels:
            cmd += ["--no-index", "--find-links", str(args.wheels)]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            log.append(f"pip install {spec}: gave up after {left:.0f} s")
            continue
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            log.append(f"pip install {spec} failed: {tail[0]}")
            continue
        env = dict(os.environ, PYTHONPATH=_pythonpath(str(site)))
        found = probe_faiss(env)
        if found and found["gpus"] > 0:
            log.append(
                f"installed {spec} into {site.relative_to(ROOT)} in "
                f"{time.perf_counter() - start:.0f} s: faiss {found['version']}, "
                f"{found['gpus']} GPU(s)"
            )
            return str(site)
        log.append(f"{spec} installed but its faiss sees no GPU (driver too old for it?)")
    log.append("no FAISS GPU build could be installed: FAISS GPU steps skip")
    return None


def _pythonpath(first: str | None) -> str:
    parts = [first] if first else []
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


# -- the gpu-marked tests --------------------------------------------------------------------------


def run_tests(env: dict[str, str], timeout: float) -> dict[str, Any]:
    WORK.mkdir(exist_ok=True)
    junit = WORK / "gpu-tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "gpu",
        "-rs",
        f"--junitxml={junit}",
        *GPU_TESTS,
    ]
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the gpu tests did not finish in {timeout:.0f} s"}
    counts: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "skips": [], "failures": []}
    try:
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            skipped = case.find("skipped")
            failed = (
                case.find("failure") if case.find("failure") is not None else case.find("error")
            )
            if skipped is not None:
                counts["skipped"] += 1
                counts["skips"].append(f"{name}: {skipped.get('message', '')}")
            elif failed is not None:
                counts["failed"] += 1
                counts["failures"].append(f"{name}: {(failed.get('message') or '')[:200]}")
            else:
                counts["passed"] += 1
    except (ET.ParseError, OSError):
        counts["error"] = "no junit report: " + (done.stdout + done.stderr)[-500:]
    counts["returncode"] = done.returncode
    return counts


# -- measurements (run in a child process: the faiss GPU build is on its PYTHONPATH) --------------


def bench_search(n: int, dim: int, nq: int, k: int) -> dict[str, Any]:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    m = rng.standard_normal((n, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out: dict[str, Any] = {"shape": f"{n:,} x {dim}, {nq:,} queries, k={k}"}
    dev = torch.device("cuda:0")
    mt = torch.from_numpy(m).to(dev, torch.float16)
    qt = torch.from_numpy(q).to(dev, torch.float16)

    def cuda_time(fn: Any, repeat: int = 5) -> float:
        fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(repeat):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            best = min(best, a.elapsed_time(b) / 1e3)
        return best

    out["torch_fp16_matmul_s"] = cuda_time(lambda: qt @ mt.T)

    def dense() -> Any:
        logits = (qt @ mt.T).float().mul_(100.0)
        probs = torch.softmax(logits, dim=1)
        return torch.topk(probs, k, dim=1)

    out["torch_fp16_matmul_softmax_topk_s"] = cuda_time(dense)
    mt = qt = torch.empty(0)  # free the GPU copies before FAISS takes its own
    torch.cuda.empty_cache()
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        res = faiss.StandardGpuResources()
        for label, fp16 in (("fp32", False), ("fp16", True)):
            config = faiss.GpuIndexFlatConfig()
            config.device = 0
            config.useFloat16 = fp16
            index = faiss.GpuIndexFlatIP(res, dim, config)
            index.add(m)
            index.search(q, k)  # warm-up
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                index.search(q, k)  # synchronous: results are back on the host
                best = min(best, time.perf_counter() - start)
            out[f"faiss_gpu_flat_ip_{label}_s"] = best
            del index
    else:
        out["faiss_gpu"] = "not available (CPU-only faiss)"
    from zsindex.index.build import build_index

    index = build_index(m, device="cuda")
    index.search(q, k, logit_scale=100.0)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        index.search(q, k, logit_scale=100.0)
        best = min(best, time.perf_counter() - start)
    out["zsindex_gpu_index"] = getattr(index, "backend", type(index).__name__)
    out["zsindex_gpu_search_exact_probabilities_s"] = best
    return out


def bench_images(seconds: float) -> dict[str, Any]:
    import numpy as np
    import open_clip
    import torch

    from zsindex.encoders.text_forward import autocast_context

    out: dict[str, Any] = {}
    model = open_clip.create_model("ViT-B-32", pretrained=None).to("cuda:0").eval()
    x = torch.randn(256, 3, 224, 224, device="cuda:0")
    for precision in ("fp32", "auto"):

        def fwd(precision: str = precision) -> None:
            with torch.inference_mode(), autocast_context("cuda:0", precision):
                model.encode_image(x)

        fwd()
        torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 4:
            fwd()
            n += len(x)
        torch.cuda.synchronize()
        label = "fp32" if precision == "fp32" else "fp16_autocast"
        out[f"vit_b32_forward_{label}_images_per_s"] = n / (time.perf_counter() - start)
    model = None
    torch.cuda.empty_cache()
    from PIL import Image

    from zsindex.config import TINY_MODEL
    from zsindex.encoders import load_encoder

    rng = np.random.default_rng(0)
    import io

    pngs = []
    for _ in range(256):
        img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        pngs.append(buf.getvalue())
    for precision in ("fp32", "auto"):
        enc = load_encoder(TINY_MODEL, device="cuda", precision=precision)
        enc.encode_images(pngs[:32], batch_size=32)
        start = time.perf_counter()
        enc.encode_images(pngs, batch_size=128)
        label = "fp32" if precision == "fp32" else "fp16_autocast"
        out[f"tiny_end_to_end_{label}_images_per_s"] = len(pngs) / (time.perf_counter() - start)
    return out


def bench_text(labels: int) -> dict[str, Any]:
    from zsindex.config import TINY_MODEL
    from zsindex.encoders import load_encoder
    from zsindex.labels.templates import resolve_templates

    templates = list(resolve_templates("simple-7"))
    names = [f"label number {i} of the benchmark" for i in range(labels)]
    out: dict[str, Any] = {"labels": labels, "templates": len(templates)}
    for device in ("cuda", "cpu"):
        enc = load_encoder(TINY_MODEL, device=device)
        count = labels if device == "cuda" else max(50, labels // 20)
        enc.encode_labels(names[:10], templates)  # load and warm up
        start = time.perf_counter()
        enc.encode_labels(names[:count], templates)
        took = time.perf_counter() - start
        out[f"{device}_prompts_per_s"] = count * len(templates) / took
    return out


def bench_child(args: argparse.Namespace) -> None:
    """The measurements, in this (child) process; prints one JSON object."""
    deadline = time.perf_counter() + args.bench_budget
    report: dict[str, Any] = {}
    steps = [
        ("search", lambda: bench_search(args.rows, 512, 1024, 5)),
        ("images", lambda: bench_images(20.0)),
        ("text", lambda: bench_text(2000)),
    ]
    for name, step in steps:
        if time.perf_counter() > deadline:
            report[name] = {"skipped": "out of time"}
            continue
        try:
            report[name] = step()
        except Exception as exc:  # a broken step is reported, the others still run
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(report))


def run_benches(env: dict[str, str], args: argparse.Namespace, budget: float) -> dict[str, Any]:
    """The measurements (a child process) and the service benchmark, within ``budget`` s."""
    child_timeout = max(45.0, budget - SERVICE_BUDGET_S)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--bench-child",
        "--bench-budget",
        str(child_timeout - 30),  # steps start only while this much is left
        "--rows",
        str(args.rows),
    ]
    out: dict[str, Any] = {}
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=child_timeout
        )
        lines = done.stdout.strip().splitlines()
        out = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
        if not out:
            out = {"error": (done.stdout + done.stderr)[-600:]}
    except subprocess.TimeoutExpired:
        out = {"error": "the measurements did not finish in time"}
    except ValueError:
        out = {"error": "unreadable measurement output"}
    # The service with GPU batching: bench_service drives real uvicorn servers.
    service_budget = SERVICE_BUDGET_S
    svc = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_service.py"),
        "--concurrency",
        "16",
        "--requests",
        "400",
        "--max-seconds",
        "12",
        "--rounds",
        "1",
        "--warmup",
        "20",
        "--device",
        "cuda",
    ]
    try:
        done = subprocess.run(
            svc,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=service_budget,
        )
        lines = [x for x in done.stdout.splitlines() if x.strip()]
        out["service"] = {"returncode": done.returncode, "output": lines[-14:]}
    except subprocess.TimeoutExpired:
        out["service"] = {"error": f"bench_service.py did not finish in {service_budget} s"}
    return out


# -- writing RESULTS.md ----------------------------------------------------------------------------


def _fmt(key: str, v: Any) -> str:
    if isinstance(v, float):
        return f"{v * 1e3:.2f} ms" if key.endswith("_s") else f"{v:,.1f}"
    return str(v)


def render(
    gpu: dict[str, str], install: list[str], tests: dict[str, Any], bench: dict[str, Any]
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START_MARK,
        f"## GPU check (`make gpu-check`), {when}",
        "",
        f"Machine: {gpu['name']} ({gpu['memory_gib']} GiB, compute {gpu['capability']}, "
        f"{gpu['count']} visible), driver {gpu['driver']} (CUDA {gpu['driver_cuda']}), "
        f"torch {gpu['torch']} (CUDA {gpu['torch_cuda']}).",
        "",
        "FAISS GPU: " + "; ".join(install),
        "",
        f"`gpu` tests: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
        f"{tests.get('skipped', 0)} skipped (a skip is not a pass).",
    ]
    for what in ("failures", "skips"):
        lines += [f"- {what[:-1]}: {x}" for x in tests.get(what, [])]
    if "error" in tests:
        lines.append(f"- error: {tests['error']}")
    search = bench.get("search", {})
    if search:
        lines += ["", f"Search at {search.get('shape', '?')} (best of 5, one call each):", ""]
        lines += ["| path | time |", "|---|---|"]
        for key, value in search.items():
            if key != "shape":
                lines.append(f"| {key} | {_fmt(key, value)} |")
    for section in ("images", "text"):
        part = bench.get(section, {})
        if part:
            lines += ["", f"{section.title()}:", ""]
            lines += [f"- {key}: {_fmt(key, value)}" for key, value in part.items()]
    images, search_s = (
        bench.get("images", {}),
        search.get("zsindex_gpu_search_exact_probabilities_s"),
    )
    per_image = images.get("vit_b32_forward_fp16_autocast_images_per_s")
    if isinstance(search_s, float) and isinstance(per_image, float):
        share = (search_s / 1024) / (1 / per_image)
        lines += ["", f"Search per image / ViT-B-32 fp16 encoding per image: {share:.1%}."]
    service = bench.get("service", {})
    if service:
        lines += ["", "Service (`benchmarks/bench_service.py --device cuda`):", "", "```"]
        lines += service.get("output", [service.get("error", "")])
        lines += ["```"]
    if "error" in bench:
        lines += ["", f"Measurement error: {bench['error']}"]
    lines.append(END_MARK)
    return "\n".join(lines) + "\n"


def write_results(section: str, path: Path = RESULTS) -> None:
    """Put ``section`` between the gpu-check markers of ``path`` (appended the first time)."""
    text = path.read_text(encoding="utf-8")
    if START_MARK in text and END_MARK in text:
        head, rest = text.split(START_MARK, 1)
        tail = rest.split(END_MARK, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--no-install", action="store_true", help="never pip-install FAISS GPU")
    ap.add_argument("--wheels", type=Path, help="install FAISS GPU from this folder of wheels")
    ap.add_argument("--no-bench", action="store_true", help="tests only; RESULTS.md untouched")
    ap.add_argument("--rows", type=int, default=1_000_000, help="label rows in the search bench")
    ap.add_argument("--bench-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bench-budget", type=float, default=240.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bench_child:
        bench_child(args)
        return 0
    start = time.perf_counter()
    gpu = find_gpu()
    if gpu is None:
        print(
            "gpu-check: no CUDA GPU found (no nvidia-smi / torch sees no CUDA device); "
            "nothing to check on this machine, nothing written."
        )
        return 0
    print(f"gpu-check: {gpu['name']}, driver {gpu['driver']} (CUDA {gpu['driver_cuda']})")
    install: list[str] = []
    site = install_faiss_gpu(args, gpu, install)
    print("gpu-check: " + "; ".join(install))
    env = dict(os.environ, PYTHONPATH=_pythonpath(site))
    left = TOTAL_BUDGET_S - (time.perf_counter() - start)
    tests = run_tests(env, timeout=min(TESTS_BUDGET_S, max(30.0, left - 150)))
    print(
        f"gpu-check: gpu tests {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
        f"{tests.get('skipped', 0)} skipped"
    )
    for line in tests.get("failures", []) + tests.get("skips", []):
        print(f"  {line}")
    ok = tests.get("failed", 0) == 0 and "error" not in tests
    if not args.no_bench:
        left = TOTAL_BUDGET_S - (time.perf_counter() - start)
        bench = run_benches(env, args, budget=left - 15) if left > 120 else {"error": "no time"}
        write_results(render(gpu, install, tests, bench))
        print(f"gpu-check: wrote the GPU section of {RESULTS.relative_to(ROOT)}")
        ok = ok and "error" not in bench
    print(f"gpu-check: done in {time.perf_counter() - start:.0f} s, {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
