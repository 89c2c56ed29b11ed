"""Verification of on-disk caches for ``zsindex db check --strict``."""

from __future__ import annotations

from zsindex.config import Settings
from zsindex.store.repository import Store


def check_caches(settings: Settings, store: Store) -> list[str]:
    """Problems with on-disk index caches of current versions (none exist yet: empty)."""
    _ = settings, store
    return []
