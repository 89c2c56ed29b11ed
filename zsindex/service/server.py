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
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from zsindex.service.one_write import coalescing_protocol

log = logging.getLogger("zsindex.service")

DRAIN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        # One socket write per response, so a replica killed mid-response leaves the proxy an
        # empty (retryable) response rather than a head without its body (one_write.py).
        "http": coalescing_protocol(),
    }
    options.update(kwargs)
    return uvicorn.Config(app, **options)


class DrainingServer(uvicorn.Server):
    """uvicorn that drains before it stops, for rolling restarts behind a load balancer.

    The first SIGTERM (or SIGINT) calls ``on_drain`` at once (the app's ``/readyz`` turns 503,
    so health checks take the replica out) and keeps serving for ``drain_s`` seconds; then
    uvicorn's own graceful shutdown runs: the listening socket closes (new connections are
    refused, a proxy retries them elsewhere), requests in flight finish, bounded by
    ``timeout_graceful_shutdown``. A second signal skips the rest of the drain; a third stops
    without waiting for requests in flight.
    Unlike plain uvicorn, the signal is not raised again after a graceful stop: the process
    exits 0.
    """

    def __init__(
        self, config: uvicorn.Config, *, drain_s: float, on_drain: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self._on_drain = on_drain
        self._draining_since: float | None = None
        self._timer: threading.Timer | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in DRAIN_SIGNALS}
        try:
            yield
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining_since is None:
            self._draining_since = time.monotonic()
            log.warning(
                "%s: draining for %.1f s, then finishing requests in flight",
                signal.Signals(sig).name,
                self.drain_s,
            )
            self._on_drain()
            self._timer = threading.Timer(self.drain_s, self._stop_accepting)
            self._timer.daemon = True
            self._timer.start()
            return
        if self._timer is not None:
            self._timer.cancel()
        if self.should_exit:  # a third signal: do not even wait for requests in flight
            log.warning("%s again: exiting without waiting", signal.Signals(sig).name)
            self.force_exit = True
            return
        log.warning("%s again: skipping the drain", signal.Signals(sig).name)
        self.should_exit = True

    def _stop_accepting(self) -> None:
        self.should_exit = True


def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    sockets: list[socket.socket] | None = None,
    drain_s: float = 0.0,
    on_drain: Callable[[], None] | None = None,
    **kwargs: Any,
) -> None:
    """Serve ``app`` in the foreground until a signal, draining first (:class:`DrainingServer`);
    on ``sockets`` when given (already bound, see :func:`bind_socket`)."""
    config = uvicorn_config(app, host, port, **kwargs)
    server = DrainingServer(config, drain_s=drain_s, on_drain=on_drain or (lambda: None))
    server.run(sockets=sockets)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, bound before the app starts.

    Raises:
        InvalidInputError: the host does not resolve or the port cannot be bound (in use, or
            privileged); the message names both.
    """
    from zsindex.errors import InvalidInputError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(
            f"cannot listen on {host}:{port}: the host does not resolve ({exc}); "
            "use an address of this machine, e.g. --host 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise InvalidInputError(
            f"cannot listen on {host}:{port}: {reason}; choose another --port or stop what holds it"
        ) from None
    sock.set_inheritable(True)
    return sock


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
    settings = Settings.from_env()
    app = create_app(settings)

    serve(
        app,
        args.host,
        args.port,
        drain_s=settings.serving.drain_s,
        on_drain=app.state.zs.start_draining,
        log_level=args.log_level,
        timeout_graceful_shutdown=settings.serving.shutdown_timeout_s,
    )
