"""GPU tests (marker ``gpu``; deselected by default, run by ``make gpu-check``).

Each test skips, with the reason, where what it needs is missing (no CUDA for torch, no FAISS GPU
build): a skip is reported as a skip, never as a pass.
"""

from __future__ import annotations

import pytest


def need_cuda() -> None:
    """Skip unless torch sees a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")


def need_faiss_gpu() -> None:
    """Skip unless the importable faiss is a GPU build that sees a GPU."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        pytest.skip("faiss is a CPU-only build (make gpu-check installs a GPU build)")
    if faiss.get_num_gpus() < 1:
        pytest.skip("faiss GPU build sees no GPU")
