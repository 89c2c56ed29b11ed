"""A quick reachability probe so offline model resolution fails in seconds, not minutes.

huggingface_hub retries a failed request several times with back-off (about 45 s for one file when
DNS fails); the probe opens one TCP connection to the Hub (or the configured proxy) in a daemon
thread and gives up after a short timeout, DNS included.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

__all__ = ["hub_reachable", "url_reachable"]

DEFAULT_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def _offline_env() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ZSINDEX_OFFLINE")
    )


def _probe(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="zsindex-net-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _target(url: str) -> tuple[str, int] | None:
    scheme = urlsplit(url).scheme or "https"
    proxy = ""
    for var in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if os.environ.get(var):
            proxy = os.environ[var]
            break
    parts = urlsplit(proxy if proxy else url)
    if not parts.hostname:
        return None
    default_port = 443 if (parts.scheme or scheme) == "https" else 80
    return parts.hostname, parts.port or default_port


def url_reachable(url: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host (or its proxy) opens within ``timeout`` s.

    ``HF_HUB_OFFLINE=1`` (or ``ZSINDEX_OFFLINE=1``) answers ``False`` without probing.
    """
    if _offline_env():
        return False
    target = _target(url)
    if target is None:
        return False
    return _probe(target[0], target[1], timeout)


def hub_reachable(timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT`` or huggingface.co) answers quickly."""
    return url_reachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co", timeout)
