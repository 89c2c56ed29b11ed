"""``scripts/gpu_check.py`` (``make gpu-check``) on this CPU-only machine, and its pieces.

The GPU work itself runs only on a GPU machine; here the script must say it found no GPU, exit 0
and write nothing, and its install choice and RESULTS.md editing must do what they say.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_without_a_gpu_it_says_so_exits_0_and_writes_nothing() -> None:
    gpu = _module()
    if gpu.nvidia_smi("-L") is not None:
        pytest.skip("this machine has an NVIDIA GPU: run `make gpu-check` itself")
    before = _digest(gpu.RESULTS)
    had_work = gpu.WORK.exists()
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU found" in done.stdout
    assert _digest(gpu.RESULTS) == before
    assert gpu.WORK.exists() == had_work  # no install folder, no test report


def test_faiss_build_choice_follows_the_driver_cuda() -> None:
    gpu = _module()
    assert gpu.faiss_candidates("13.0", "1.15.1") == ["faiss-gpu==1.15.1", "faiss-gpu-cu12"]
    assert gpu.faiss_candidates("12.4", "1.15.1") == ["faiss-gpu-cu12"]
    assert gpu.faiss_candidates("11.8", "1.15.1") == ["faiss-gpu-cu11"]
    assert gpu.faiss_candidates("10.2", "1.15.1") == []


def test_results_section_is_appended_once_then_replaced(tmp_path: Path) -> None:
    gpu = _module()
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## other\n\ntext\n", encoding="utf-8")
    info = {
        "name": "Test GPU",
        "memory_gib": "80",
        "capability": "9.0",
        "count": "1",
        "driver": "1",
        "driver_cuda": "13.0",
        "torch": "2",
        "torch_cuda": "13.0",
    }
    tests = {"passed": 3, "failed": 1, "skipped": 1, "failures": ["t::a: boom"], "skips": ["t::b"]}
    bench = {"search": {"shape": "1 x 1", "torch_fp16_matmul_s": 0.0012}}
    first = gpu.render(info, ["installed faiss-gpu"], tests, bench)
    assert first.startswith(gpu.START_MARK) and first.rstrip().endswith(gpu.END_MARK)
    assert "3 passed, 1 failed, 1 skipped" in first and "| torch_fp16_matmul_s | 1.20 ms |" in first
    gpu.write_results(first, results)
    gpu.write_results(first.replace("Test GPU", "Other GPU"), results)
    text = results.read_text(encoding="utf-8")
    assert text.count(gpu.START_MARK) == 1 and "Other GPU" in text and "Test GPU" not in text
    assert text.startswith("# results\n\n## other\n\ntext\n")
