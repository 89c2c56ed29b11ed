"""The text worker itself: the child process that loads the text tower and encodes token ids.

Started by :class:`~zsindex.encoders.worker_parent.TextWorker` as ``python -P -m
zsindex.encoders.text_worker`` (whose ``__main__`` is :func:`main`). It loads the model as soon as
the ``load`` frame arrives, answers ``ready``, then encodes each request of token ids (see
:mod:`zsindex.encoders.worker_frames` for the frames). A standard CLIP text tower is built with
torch alone (:mod:`zsindex.encoders.plain_tower`); any other model runs as open_clip builds it.

The worker exits when its stdin closes (noticed between requests; while loading or encoding, at
its next write).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import signal
import sys
import threading
import traceback
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from zsindex.encoders.text_forward import ProgressFn, encode_prompts
from zsindex.encoders.worker_frames import recv_frame, send_frame
from zsindex.errors import ModelError, ZsindexError

if TYPE_CHECKING:
    from zsindex.encoders.encoder import Encoder

__all__ = ["main"]


def _error_frame(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ZsindexError):
        return {"op": "error", "code": exc.code, "message": exc.message}
    # Anything else (a torch RuntimeError, CUDA out of memory) is still an answer the parent can
    # show, not a crash it has to guess about.
    message = f"text encoding failed: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
    return {"op": "error", "code": ModelError.code, "message": message}


class _EncodeFn(Protocol):
    def __call__(
        self, tokens: np.ndarray, *, batch_size: int, progress: ProgressFn | None
    ) -> np.ndarray: ...


def _plain_encoder(encoder: Encoder) -> _EncodeFn | None:
    """Encoding through a standard text tower built without open_clip (see
    :mod:`zsindex.encoders.plain_tower`), or ``None`` for other models."""
    resolved = encoder.resolved
    if resolved is None:
        return None
    from zsindex.encoders.loading import resolve_device
    from zsindex.encoders.plain_tower import read_plain_tower

    device = resolve_device(encoder.device_request)
    tower = read_plain_tower(resolved.model_cfg, resolved.weights_path, device)
    if tower is None:
        return None

    def encode(tokens: np.ndarray, *, batch_size: int, progress: ProgressFn | None) -> np.ndarray:
        feats = encode_prompts(
            None,
            tokens,
            device=device,
            precision=encoder.precision,
            batch_size=batch_size,
            progress=progress,
            tower=tower,
        )
        return feats.numpy()

    return encode


class _RequestReader:
    """Reads requests on a thread as they arrive, so the encoding loop knows whether the
    parent has sent a request's last part (it has stopped tokenizing) before it gets there."""

    def __init__(self, inp: IO[bytes]) -> None:
        self._inp = inp
        self._queue: queue.Queue[tuple[dict[str, Any], bytearray] | None] = queue.Queue()
        self._lasts_read = self._lasts_taken = 0
        threading.Thread(target=self._read, name="zsindex-requests", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                header, payload = recv_frame(self._inp)
                if header.get("last", True):
                    self._lasts_read += 1
                self._queue.put((header, payload))
        except (EOFError, OSError, ValueError):  # the parent went away (or wrote garbage)
            self._queue.put(None)

    def next(self) -> tuple[dict[str, Any], bytearray] | None:
        """The next request, or ``None`` when the parent closed our stdin."""
        item = self._queue.get()
        if item is not None and item[0].get("last", True):
            self._lasts_taken += 1
        return item

    def all_sent(self) -> bool:
        """Whether the last part of the request being served has arrived."""
        return self._lasts_read > self._lasts_taken


def _send_progress(out: IO[bytes], offset: int, total: int | None, done: int, of: int) -> None:
    """A progress frame; a part's counts are shifted to the whole request's."""
    send_frame(
        out, {"op": "progress", "done": offset + done, "total": of if total is None else total}
    )


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    from zsindex.encoders.encoder import load_encoder

    header, _ = recv_frame(inp)
    logging.getLogger().setLevel(int(header.get("log_level") or logging.WARNING))
    try:
        encoder = load_encoder(
            header["model"],
            header.get("pretrained"),
            header.get("device") or "auto",
            precision=header.get("precision") or "auto",
        )
        encode = _plain_encoder(encoder)
        runtime = "plain"
        if encode is None:  # anything else: the model as open_clip builds it
            encode, runtime = encoder.load().encode_tokens, "open_clip"
        info = encoder.info
    except Exception as exc:
        send_frame(out, _error_frame(exc))
        return
    ready = {"op": "ready", "fingerprint": info.fingerprint, "dim": info.dim, "runtime": runtime}
    send_frame(out, ready)
    requests = _RequestReader(inp)
    import torch

    threads = torch.get_num_threads()
    parts: list[np.ndarray] = []  # features of the parts of a request sent in parts
    skipping = False  # a part failed: its answer was the error; drop the rest of its parts
    while (request := requests.next()) is not None:
        header, payload = request
        in_parts, last = "last" in header, bool(header.get("last", True))
        # While the parent still tokenizes the next parts it needs a core: one thread here
        # (two would take turns with it on a 2-CPU machine); all of them once it is done.
        torch.set_num_threads(1 if not last and not requests.all_sent() else threads)
        if skipping:
            skipping = not last
            continue
        progress = functools.partial(
            _send_progress, out, int(header.get("offset", 0)), header.get("total")
        )
        try:
            shape = tuple(int(x) for x in header["shape"])
            tokens = np.frombuffer(payload, dtype=np.int32).reshape(shape).astype(np.int64)
            emb = encode(tokens, batch_size=int(header["batch_size"]), progress=progress)
        except (BrokenPipeError, EOFError):
            raise
        except Exception as exc:
            send_frame(out, _error_frame(exc))
            parts.clear()
            skipping = in_parts and not last
            continue
        parts.append(emb.astype(np.float32, copy=False))
        if last:
            result = parts[0] if len(parts) == 1 else np.concatenate(parts)
            parts.clear()
            send_frame(out, {"op": "result", "shape": list(result.shape)}, result)


def main() -> None:
    """The worker's entry point (``python -m zsindex.encoders.text_worker``)."""
    # The parent owns the terminal: Ctrl-C there closes our stdin or kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    code = 0
    try:
        _serve(sys.stdin.buffer, out)
    except (BrokenPipeError, EOFError):  # the parent went away
        pass
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):  # both are stderr now
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        # Tearing down torch's modules costs ~1.5 s and there is nothing left to save.
        os._exit(code)
