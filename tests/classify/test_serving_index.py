"""Which index serves a loaded label set, through the product (not the index layer alone)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zsindex import Client
from zsindex.config import Settings

DIM = 128


def _settings(home: Path, **changes: object) -> Settings:
    base = Settings(home=home, device="cpu", model="zsindex-tiny", pretrained=None)
    return replace(base, **changes)  # type: ignore[arg-type]


def _unit(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_exact_cpu_index_serves_on_a_machine_without_gpu(zs_home: Path, device: str) -> None:
    with Client.local(settings=_settings(zs_home, device=device)) as client:
        client.import_labelset("big", _unit(300, 0), [f"l{i}" for i in range(300)])
        [result] = client.classify(embeddings=_unit(1, 1), labelset="big")
        loaded = client.backend.ready()["loaded"]["big"]  # type: ignore[attr-defined]
        assert loaded == {"version": 1, "index": "numpy-blocked", "device": "cpu", "exact": True}
        assert result.exact_probabilities


def test_device_cpu_keeps_search_on_cpu_and_never_imports_torch(zs_home: Path) -> None:
    """``ZSINDEX_DEVICE=cpu``: a query with precomputed embeddings stays on the CPU path."""
    with Client.local(settings=_settings(zs_home)) as client:
        client.import_labelset("s", _unit(10, 2), [f"l{i}" for i in range(10)])
    code = (
        "import sys, numpy as np\n"
        "from zsindex import Client\n"
        "c = Client.local()\n"
        "q = np.ones((1, 128), np.float32)\n"
        "r = c.classify(embeddings=q, labelset='s')\n"
        "print(c.backend.ready()['loaded']['s']['index'], 'torch' in sys.modules)\n"
    )
    env = {"ZSINDEX_HOME": str(zs_home), "ZSINDEX_DEVICE": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["numpy-blocked", "False"]


def test_an_approximate_index_serves_only_when_asked(zs_home: Path) -> None:
    names = [f"l{i}" for i in range(2000)]
    matrix = _unit(2000, 3)
    with Client.local(settings=_settings(zs_home, index="ivf:nlist=16,nprobe=16")) as client:
        client.import_labelset("ann", matrix, names)
        [result] = client.classify(embeddings=matrix[:1], labelset="ann", k=3)
        loaded = client.backend.ready()["loaded"]["ann"]  # type: ignore[attr-defined]
        assert loaded["index"] == "faiss-ivf" and loaded["exact"] is False
        assert result.predictions[0].label == "l0"  # its own row, found with nprobe = nlist


@pytest.mark.gpu
def test_cuda_device_puts_the_index_on_the_gpu(zs_home: Path) -> None:
    from zsindex.index.device import choose_exact_backend

    if choose_exact_backend("auto").device == "cpu":
        pytest.skip("no GPU: neither FAISS GPU nor torch CUDA is available")
    names = [f"l{i}" for i in range(5000)]
    matrix = _unit(5000, 4)
    queries = _unit(8, 5)
    with Client.local(settings=_settings(zs_home)) as cpu:
        cpu.import_labelset("g", matrix, names)
        expected = cpu.classify(embeddings=queries, labelset="g", k=5)
    with Client.local(settings=_settings(zs_home, device="cuda")) as gpu:
        got = gpu.classify(embeddings=queries, labelset="g", k=5)
        loaded = gpu.backend.ready()["loaded"]["g"]  # type: ignore[attr-defined]
    assert loaded["index"] in ("faiss-gpu-flat", "torch-cuda")
    assert loaded["device"].startswith("cuda:")
    for a, b in zip(expected, got, strict=True):
        assert [p.label for p in a.predictions] == [p.label for p in b.predictions]
        np.testing.assert_allclose(
            [p.probability for p in a.predictions],
            [p.probability for p in b.predictions],
            rtol=1e-5,
        )


def test_a_version_records_the_index_it_asks_for(zs_home: Path) -> None:
    """``labels add --index`` / ``index=``: recorded with the version, shown by ``labelset()``,
    and it serves that version whatever ``ZSINDEX_INDEX`` says; the same content with another
    index is a new version, the same content and index is not."""
    names = [f"l{i}" for i in range(2000)]
    matrix = _unit(2000, 6)
    with Client.local(settings=_settings(zs_home)) as client:
        info = client.import_labelset("v", matrix, names, index="ivf16,nprobe=16")
        assert info.index == "ivf:nlist=16,nprobe=16" and info.version == 1
        [result] = client.classify(embeddings=matrix[:1], labelset="v", k=2)
        assert result.predictions[0].label == "l0"
        assert client.backend.ready()["loaded"]["v"]["index"] == "faiss-ivf"  # type: ignore[attr-defined]
        again = client.add_labelset("w", ["red", "blue"], index="exact")
        same = client.add_labelset("w", ["red", "blue"], index="exact")
        other = client.add_labelset("w", ["red", "blue"], index="hnsw8")
        assert (again.version, same.version, other.version) == (1, 1, 2)
        assert client.labelset("w").index == "hnsw:ef_construction=80,m=8"
        assert [v.index for v in client.history("w")] == ["exact", "hnsw:ef_construction=80,m=8"]


def test_a_bad_index_spec_is_refused_before_anything_is_written(zs_home: Path) -> None:
    from zsindex.errors import InvalidInputError

    with Client.local(settings=_settings(zs_home)) as client:
        with pytest.raises(InvalidInputError, match="index spec"):
            client.add_labelset("bad", ["a", "b"], index="kdtree")
        assert client.labelsets() == []
