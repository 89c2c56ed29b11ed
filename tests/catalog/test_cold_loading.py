"""A cold start from SQL (labels and matrix read side by side, on both backends) and the local
cache written behind it: the same answers from SQL, from the cache and from a fresh home."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zsindex import Client
from zsindex.catalog import loading
from zsindex.config import Settings
from zsindex.options import Mode
from zsindex.store import repository


def _client(db_url: str, home: Path) -> Client:
    return Client.local(database_url=db_url, home=home, device="cpu")


def _answers(c: Client, name: str, q: np.ndarray, mode: Mode = "flat") -> list[tuple[str, float]]:
    [r] = c.classify(embeddings=q, labelset=name, k=3, mode=mode)
    return [(p.label, p.probability) for p in r.predictions]


def _cache_files(home: Path) -> list[Path]:
    folder = loading.cache_dir(Settings(home=home))
    return sorted(folder.glob("*.zsic")) if folder.is_dir() else []


@pytest.fixture
def background(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every load writes its cache on the background thread, over many small chunks."""
    monkeypatch.setattr(loading, "BACKGROUND_WRITE_BYTES", 0)
    monkeypatch.setattr(repository, "CHUNK_ROWS", 16)


def test_background_cache_write_then_warm_start(
    db_url: str, tmp_path: Path, random_model: str, background: None
) -> None:
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((300, 64)).astype(np.float32)
    q = emb[41] / np.linalg.norm(emb[41])
    seed = _client(db_url, tmp_path / "seed")
    seed.import_labelset("big", emb, [f"l{i}" for i in range(300)], model=random_model)
    assert loading.wait_for_cache_writes(timeout=60)
    seed.close()

    cold_home = tmp_path / "replica"
    cold = _client(db_url, cold_home)
    first = _answers(cold, "big", q)
    assert first[0][0] == "l41"
    assert loading.wait_for_cache_writes(timeout=60)
    assert len(_cache_files(cold_home)) == 1
    cold.close()

    def no_sql(*_a: object, **_k: object) -> None:
        raise AssertionError("a warm start must not read the matrix from SQL")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_from_sql", no_sql)
        warm = _client(db_url, cold_home)
        assert _answers(warm, "big", q) == first  # bit-identical probabilities
        warm.close()


def test_tree_cold_and_warm_agree(
    db_url: str, tmp_path: Path, random_model: str, background: None
) -> None:
    rng = np.random.default_rng(6)
    names = ["animal", "plant", *[f"a{i}" for i in range(40)], *[f"p{i}" for i in range(40)]]
    parents: list[str | None] = [None, None, *["animal"] * 40, *["plant"] * 40]
    emb = rng.standard_normal((len(names), 64)).astype(np.float32)
    q = emb[7] / np.linalg.norm(emb[7])
    home = tmp_path / "home"
    c = _client(db_url, home)
    c.import_labelset("tree", emb, names, parents=parents, model=random_model)
    assert loading.wait_for_cache_writes(timeout=60)
    for path in _cache_files(home):  # the next start reads SQL
        path.unlink()
    c.close()
    cold = _client(db_url, home)
    modes: tuple[Mode, ...] = ("flat", "beam")
    answers = {mode: _answers(cold, "tree", q, mode) for mode in modes}
    assert answers["flat"][0][0] == "a5"
    assert loading.wait_for_cache_writes(timeout=60)
    cold.close()
    warm = _client(db_url, home)
    assert {mode: _answers(warm, "tree", q, mode) for mode in modes} == answers
    warm.close()


def test_wait_for_cache_writes_with_nothing_pending() -> None:
    assert loading.wait_for_cache_writes() is True


def test_a_small_set_is_never_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below CACHE_MIN_BYTES a load reads the store every time and writes no cache file."""
    monkeypatch.setattr(loading, "CACHE_MIN_BYTES", 16 * 2**20)
    home = tmp_path / "home"
    with Client.local(home=home, device="cpu") as client:
        rows = np.eye(4, 128, dtype=np.float32)
        client.import_labelset("small", rows, ["a", "b", "c", "d"], model="zsindex-tiny")
        [result] = client.classify(embeddings=rows[:1], labelset="small", k=1)
        assert result.predictions[0].label == "a"
    assert not list(home.rglob("*.zsic"))
