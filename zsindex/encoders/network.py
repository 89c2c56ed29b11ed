"""A quick reachability probe so offline model resolution fails in seconds, not minutes.

huggingface_hub retries a failed request several times with back-off (about 45 s for one file when
DNS fails); the probe opens one TCP connection to the Hub (or the configured proxy) in a daemon
thread and gives up after a short timeout, DNS included. What it needs to know (offline, the Hub's
address, proxies) comes in a :class:`~zsindex.config.NetworkSettings` read by
:func:`zsindex.config.network_from_env`.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

from zsindex.settings_types import NetworkSettings

__all__ = ["hub_reachable", "url_reachable"]

DEFAULT_TIMEOUT_S = 3.0


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


def _target(url: str, network: NetworkSettings) -> tuple[str, int] | None:
    scheme = urlsplit(url).scheme or "https"
    proxy = network.proxy_for(scheme)
    parts = urlsplit(proxy if proxy else url)
    if not parts.hostname:
        return None
    default_port = 443 if (parts.scheme or scheme) == "https" else 80
    return parts.hostname, parts.port or default_port


def url_reachable(url: str, network: NetworkSettings, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host (or its proxy) opens within ``timeout`` s.

    ``network.offline`` (``ZSINDEX_OFFLINE=1``, ``HF_HUB_OFFLINE=1``) answers ``False`` without
    probing.
    """
    if network.offline:
        return False
    target = _target(url, network)
    if target is None:
        return False
    return _probe(target[0], target[1], timeout)


def hub_reachable(network: NetworkSettings, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the Hugging Face Hub (``network.hf_endpoint``) answers quickly."""
    return url_reachable(network.hf_endpoint, network, timeout)
