"""The catalogue tests exercise the local index cache on small label sets, which in use skip it
(``loading.CACHE_MIN_BYTES``): here every set is cached, as a large one would be."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def cache_every_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from zsindex.catalog import loading

    monkeypatch.setattr(loading, "CACHE_MIN_BYTES", 0)
