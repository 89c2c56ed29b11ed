"""Worker thread pools created on first use, one thread per core."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


class LazyPool:
    """A ``ThreadPoolExecutor`` made on the first :meth:`get` (import stays cheap), then
    shared. Each user that may be called from another pool's workers needs its own instance:
    waiting on one's own pool from inside it can deadlock."""

    def __init__(self, thread_name_prefix: str) -> None:
        self._prefix = thread_name_prefix
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, os.cpu_count() or 1), thread_name_prefix=self._prefix
                )
            return self._pool
