"""choose_index: which index serves a label matrix for each device and spec.

On this machine (and in CI) there is no GPU: exact search is ``numpy-blocked`` for every device,
with a warning when ``cuda`` was asked for. The GPU branches are checked with the GPU counts
patched, and for real by the ``gpu`` test at the end (deselected by default).
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

import zsindex.index.choice as choice_mod
import zsindex.index.device as device_mod
from zsindex.errors import InvalidInputError
from zsindex.index import (
    AnnIndex,
    DeviceChoice,
    ExactIndex,
    SearchIndex,
    TorchIndex,
    choose_exact_backend,
    choose_index,
    on_device,
)


def _random(n: int, dim: int, seed: int, make_unit) -> np.ndarray:
    return make_unit(np.random.default_rng(seed).standard_normal((n, dim)))


def _has_gpu() -> bool:
    if device_mod.faiss_gpu_count() > 0:
        return True
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: see the gpu test")
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_exact_search_stays_on_cpu_without_gpu(make_unit, caplog, device: str) -> None:
    m = _random(500, 16, 1, make_unit)
    with caplog.at_level(logging.WARNING, logger="zsindex.index.device"):
        index = choose_index(m, device=device)
    assert isinstance(index, ExactIndex) and isinstance(index, SearchIndex)
    assert (index.backend, index.device, index.spec.canonical()) == (
        "numpy-blocked",
        "cpu",
        "exact",
    )
    warned = [r for r in caplog.records if "no GPU is usable" in r.getMessage()]
    assert len(warned) == (1 if device.startswith("cuda") else 0)
    res = index.search(m[:3], 2, logit_scale=100.0)
    assert res.backend == "numpy-blocked" and res.exact_neighbors and res.exact_probabilities
    assert res.ids[:, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_cpu_query_never_imports_torch(device: str) -> None:
    """Precomputed embeddings on a CPU-only machine: the whole query runs without torch."""
    code = (
        "import sys, numpy as np, zsindex\n"
        "from zsindex.index import choose_index\n"
        "m = np.eye(8, dtype=np.float32)\n"
        f"index = choose_index(m, device={device!r})\n"
        "res = index.search(m[:2], 3, logit_scale=50.0)\n"
        "print(index.backend, 'torch' in sys.modules, 'faiss' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    backend, torch_loaded, faiss_loaded = out.stdout.split()
    if backend == "numpy-blocked":  # a CPU-only machine (or device="cpu")
        assert torch_loaded == "False"
    if device == "cpu":
        assert (backend, torch_loaded, faiss_loaded) == ("numpy-blocked", "False", "False")


@pytest.mark.parametrize(
    ("spec", "backend"),
    [("ivf16,nprobe=4", "faiss-ivf"), ("hnsw16,ef_search=64", "faiss-hnsw"), ("ivf16,sq8", None)],
)
@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_approximate_spec_gives_ann_index(make_clustered, spec: str, backend, device) -> None:
    m = make_clustered(4000, 16, 40, seed=2)
    index = choose_index(m, device=device, spec=spec)
    assert isinstance(index, AnnIndex) and isinstance(index, SearchIndex)
    assert index.device == "cpu"
    assert index.spec.canonical() == choice_mod.IndexSpec.parse(spec).canonical()
    if backend is not None:  # fixed search parameter: no tuning, never falls back
        assert index.backend == backend
    q = m[:5]
    res = index.search(q, 5, logit_scale=100.0)
    assert res.backend == index.backend and res.exact_probabilities  # exact kept by default
    assert res.exact_neighbors == index.uses_exact
    exact = ExactIndex(m).search(q, 5, logit_scale=100.0)
    np.testing.assert_array_equal(res.ids[:, 0], exact.ids[:, 0])
    top = index.search(q, 5, logit_scale=100.0, probabilities="topk")
    assert not top.exact_probabilities  # normalised over the 5 returned, and says so


def test_exact_spec_and_bad_input(make_unit) -> None:
    m = _random(50, 8, 3, make_unit)
    assert isinstance(choose_index(m, spec="exact", device="cpu"), ExactIndex)
    assert isinstance(choose_index(m, spec=choice_mod.IndexSpec(), device="cpu"), ExactIndex)
    with pytest.raises(InvalidInputError, match="device"):
        choose_index(m, device="gpu")
    with pytest.raises(InvalidInputError, match="device"):
        choose_index(m, device="gpu", spec="ivf4")
    with pytest.raises(InvalidInputError, match="spec"):
        choose_index(m, spec="lsh8")
    with pytest.raises(InvalidInputError, match="NaN"):
        choose_index(np.full((3, 4), np.nan, np.float32), device="cpu")


def _pretend(monkeypatch, *, faiss_gpus: int, torch_gpus: int) -> None:
    monkeypatch.setattr(device_mod, "gpu_hint", lambda: True)
    monkeypatch.setattr(device_mod, "faiss_gpu_count", lambda: faiss_gpus)
    monkeypatch.setattr(device_mod, "torch_gpu_count", lambda: torch_gpus)


@pytest.mark.parametrize(
    ("faiss_gpus", "torch_gpus", "device", "expected"),
    [
        (0, 0, "auto", ("numpy-blocked", "cpu")),
        (0, 2, "auto", ("torch-cuda", "cuda:0")),
        (0, 2, "cuda", ("torch-cuda", "cuda:0")),
        (0, 2, "cuda:1", ("torch-cuda", "cuda:1")),
        (0, 2, "cuda:5", ("torch-cuda", "cuda:1")),
        (1, 1, "auto", ("faiss-gpu-flat", "cuda:0")),
        (1, 1, "cuda:0", ("faiss-gpu-flat", "cuda:0")),
        (2, 2, "cpu", ("numpy-blocked", "cpu")),
    ],
)
def test_backend_for_each_device(monkeypatch, faiss_gpus, torch_gpus, device, expected) -> None:
    _pretend(monkeypatch, faiss_gpus=faiss_gpus, torch_gpus=torch_gpus)
    choice = choose_exact_backend(device)
    assert (choice.backend, choice.device) == expected
    assert device_mod.resolve_device(device) == expected[1]


def test_auto_without_gpu_hint_looks_no_further(monkeypatch) -> None:
    monkeypatch.setattr(device_mod, "gpu_hint", lambda: False)

    def fail() -> int:
        raise AssertionError("must not look for a GPU")

    monkeypatch.setattr(device_mod, "faiss_gpu_count", fail)
    monkeypatch.setattr(device_mod, "torch_gpu_count", fail)
    assert choose_exact_backend("auto") == device_mod.CPU_CHOICE


def test_torch_choice_builds_torch_index(monkeypatch, make_unit) -> None:
    """The wiring of the torch-cuda branch, with the CPU standing in for the GPU."""
    monkeypatch.setattr(
        choice_mod, "choose_exact_backend", lambda device: DeviceChoice("torch-cuda", "cpu")
    )
    monkeypatch.setattr(
        device_mod, "choose_exact_backend", lambda device: DeviceChoice("torch-cuda", "cpu")
    )
    m16 = _random(300, 8, 4, make_unit).astype(np.float16)
    index = choose_index(m16, device="cuda")
    assert isinstance(index, TorchIndex) and isinstance(index, SearchIndex)
    assert index.backend == "torch-cpu"
    moved = on_device(ExactIndex(m16), "cuda")
    assert isinstance(moved, TorchIndex)
    assert str(moved.matrix.dtype) == "torch.float16"  # fp16 stays fp16 on the device
    q = _random(4, 8, 5, make_unit)
    ref = ExactIndex(m16).search(q, 3, logit_scale=30.0)
    for idx in (index, moved):
        res = idx.search(q, 3, logit_scale=30.0)
        np.testing.assert_array_equal(res.ids, ref.ids)
        np.testing.assert_allclose(res.probabilities, ref.probabilities, atol=1e-5)


@pytest.mark.gpu
def test_cuda_index_lives_on_gpu(make_unit) -> None:  # pragma: no cover - needs a GPU
    if not _has_gpu():
        pytest.skip("no GPU: neither FAISS GPU nor torch CUDA is available")
    m = _random(200_000, 64, 6, make_unit)
    q = _random(64, 64, 7, make_unit)
    index = choose_index(m, device="cuda")
    assert index.backend in ("faiss-gpu-flat", "torch-cuda")
    assert index.device == "cuda:0"
    ref = ExactIndex(m)
    for kwargs in ({}, {"mode": "sigmoid"}, {"subset": np.arange(0, 200_000, 3)}):
        res = index.search(q, 5, logit_scale=100.0, **kwargs)
        want = ref.search(q, 5, logit_scale=100.0, **kwargs)
        np.testing.assert_array_equal(res.ids, want.ids)
        np.testing.assert_allclose(res.probabilities, want.probabilities, atol=1e-5)
    import torch

    if torch.cuda.is_available():
        t16 = TorchIndex(m.astype(np.float16), "cuda")
        assert t16.device == "cuda:0" and t16.matrix.dtype == torch.float16
        before = torch.get_float32_matmul_precision()
        try:
            torch.set_float32_matmul_precision("high")  # TF32: the top k must stay exact
            res = t16.search(q, 5, logit_scale=100.0)
        finally:
            torch.set_float32_matmul_precision(before)
        want = ExactIndex(m.astype(np.float16)).search(q, 5, logit_scale=100.0)
        np.testing.assert_array_equal(res.ids, want.ids)
        np.testing.assert_allclose(res.probabilities, want.probabilities, atol=1e-5)
