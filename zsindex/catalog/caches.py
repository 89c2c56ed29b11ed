"""Verification of on-disk caches for ``zsindex db check --strict``."""

from __future__ import annotations

from zsindex.catalog.loading import cache_dir
from zsindex.config import Settings
from zsindex.store.repository import Store


def check_caches(settings: Settings, store: Store) -> list[str]:
    """Problems with on-disk index cache files (a bad file is also rebuilt on next load)."""
    from zsindex.index import IndexCache

    _ = store
    folder = cache_dir(settings)
    if not folder.is_dir():
        return []
    return [
        f"index cache {path.name}: {reason}"
        for path, reason in IndexCache(folder).verify_all().items()
        if reason is not None
    ]
