"""``zsindex serve``: run the HTTP service (FastAPI under uvicorn) on the configured store."""

from __future__ import annotations

import logging
import sys

import click

from zsindex.cli.context import CliState
from zsindex.cli.output import info
from zsindex.errors import SchemaOutOfDateError, StoreError


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to bind.",
)
@click.pass_obj
def serve(state: CliState, host: str, port: int) -> None:
    """Serve the HTTP API (/v1/classify, /v1/labelsets, /healthz, /readyz, /metrics, /).

    Writes need 'Authorization: Bearer <key>' with a key from ZSINDEX_API_KEYS (with none set,
    writes are refused). Limits: ZSINDEX_MAX_BODY_BYTES, ZSINDEX_MAX_IMAGES_PER_REQUEST,
    ZSINDEX_MAX_EMBEDDINGS_PER_REQUEST, ZSINDEX_MAX_IMAGE_PIXELS, ZSINDEX_MAX_CONCURRENCY,
    ZSINDEX_REQUEST_TIMEOUT_S; micro-batching: ZSINDEX_BATCHING (1), ZSINDEX_BATCH_MAX_IMAGES (32),
    ZSINDEX_BATCH_MAX_WAIT_MS (4), ZSINDEX_MODEL_WORKERS (1), ZSINDEX_TORCH_THREADS. /readyz is
    503 until the label sets in ZSINDEX_PRELOAD (default: all) are loaded; new versions arrive by
    LISTEN/NOTIFY on PostgreSQL (ZSINDEX_NOTIFY) and by polling every
    ZSINDEX_REFRESH_INTERVAL_S (2) seconds. On SIGTERM /readyz turns 503, requests are served
    for ZSINDEX_DRAIN_S (5) more seconds, then those in flight finish within
    ZSINDEX_SHUTDOWN_TIMEOUT_S (30). All are read with the other settings (README,
    "Environment").
    """
    # The service is imported only when this command runs (the CLI stays light).
    from zsindex.service.app import create_app
    from zsindex.service.request_log import configure_access_log
    from zsindex.service.server import bind_socket, prefer_passive_openmp
    from zsindex.service.server import serve as run_server

    prefer_passive_openmp()  # before any model (torch) loads
    # Hand the GIL over after 1 ms instead of 5: the thread that swaps in a new version (a few
    # dozen short steps between database round trips) then waits less behind request handlers.
    sys.setswitchinterval(0.001)

    settings = state.settings
    sock = bind_socket(host, port)  # a busy port or a bad host: one line, before anything else
    app = create_app(settings)
    zs = app.state.zs
    try:
        zs.backend.open_store(create=True)  # a schema newer than this code stops here
    except SchemaOutOfDateError:
        sock.close()
        raise
    except StoreError as exc:  # unreachable now: start anyway, /readyz says 503 until it is back
        info(f"warning: {exc}; /readyz answers 503 until the store is reachable")
    if not settings.api_keys:
        info("note: ZSINDEX_API_KEYS is not set, so every write (POST/DELETE) will be refused")
    if host not in ("127.0.0.1", "localhost", "::1"):
        info(f"warning: listening on {host}: the API is reachable from other machines")
    bound_port = sock.getsockname()[1]
    info(f"serving on http://{host}:{bound_port} (Ctrl-C to stop)")
    level = "debug" if state.debug else "warning"
    if state.debug:
        logging.getLogger("zsindex").setLevel(logging.DEBUG)
    serving = settings.serving

    configure_access_log()  # one JSON line per request on stderr
    run_server(
        app,
        host,
        bound_port,
        sockets=[sock],
        drain_s=serving.drain_s,
        on_drain=zs.start_draining,
        log_level=level,
        timeout_graceful_shutdown=serving.shutdown_timeout_s,
    )
