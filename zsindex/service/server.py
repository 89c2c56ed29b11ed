"""Running the app under uvicorn: the foreground server of ``zsindex serve`` and a background
server on a free loopback port (tests, benchmarks).

uvicorn's own access log is off: it would print request URLs with their query strings, and a key
sent there by mistake must never reach a log. The app writes its own access line (path only, no
query, no headers) to the ``zsindex.service.access`` logger.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

log = logging.getLogger("zsindex.service")


def prefer_passive_openmp() -> None:
    """Default ``OMP_WAIT_POLICY=PASSIVE`` for a serving process (unless already set).

    OpenMP's default active wait makes torch's intra-op threads spin between parallel regions;
    when the cores are shared (a busy 2-core host), a spinning thread waits for a whole
    scheduler slice on every operator and a tiny forward takes 10-100x longer (measured in
    ``benchmarks/RESULTS.md``). Passive waiting costs little when the machine is idle.
    Takes effect only if torch has not been imported yet (OpenMP reads it when it starts).
    """
    if "torch" in sys.modules:
        log.debug("torch already imported: OMP_WAIT_POLICY left as it is")
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def uvicorn_config(
    app: Any, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any
) -> uvicorn.Config:
    """A uvicorn config for the app: no uvicorn access log, no server header, quick shutdown."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "server_header": False,
        "log_level": "warning",
        "timeout_graceful_shutdown": 5,
        "lifespan": "on",
    }
    options.update(kwargs)
    return uvicorn.Config(app, **options)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Serve ``app`` in the foreground until interrupted."""
    uvicorn.Server(uvicorn_config(app, host, port, **kwargs)).run()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    """A uvicorn server in a daemon thread on ``127.0.0.1`` and a random free port.

    Use as a context manager; ``base_url`` is set once the server accepts connections.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", **kwargs: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.base_url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, host, self.port, **kwargs))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def background_server(app: Any, **kwargs: Any) -> Iterator[BackgroundServer]:
    with BackgroundServer(app, **kwargs) as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    """``python -m zsindex.service [--host H] [--port P]`` (settings from ``ZSINDEX_*``)."""
    from zsindex.config import Settings
    from zsindex.service.app import create_app

    parser = argparse.ArgumentParser(prog="python -m zsindex.service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    prefer_passive_openmp()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    serve(create_app(Settings.from_env()), args.host, args.port, log_level=args.log_level)
