"""The frames the text worker and its parent exchange over the worker's stdin and stdout.

Each frame is a 4-byte big-endian header length, a JSON header, and ``header["nbytes"]`` bytes of
array payload (the worker's own prints go to stderr, so stdout carries frames only). One request
is outstanding at a time, and the child reads requests on a thread as they arrive, so neither side
can block on a full pipe while the other waits for it.

* parent → worker: ``{"op": "load", "model", "pretrained", "device", "precision", "log_level"}``
  once, then ``{"op": "encode", "shape", "batch_size", "nbytes"}`` + int32 token ids, any number
  of times. A request may come in parts (:meth:`TextWorker.tokenize_and_encode`): each part's
  header adds ``"offset"`` (its first prompt), ``"total"`` (prompts in the request) and
  ``"last"``; the worker encodes each part as it comes and answers once, after the last (a part
  that fails is answered with its error, and the request's later parts are dropped).
* worker → parent: ``{"op": "ready", "fingerprint", "dim", "runtime"}`` (``plain``: a standard
  text tower built without open_clip; ``open_clip``: the model as open_clip builds it) or
  ``{"op": "error", "code", "message"}``; per encode, ``{"op": "progress", "done", "total"}``
  frames, then ``{"op": "result", "shape", "nbytes"}`` + float32 features (or an error frame).

The parent side is :mod:`zsindex.encoders.worker_parent`, the worker's
:mod:`zsindex.encoders.worker_child`.
"""

from __future__ import annotations

import json
import struct
from typing import IO, Any

import numpy as np

__all__ = ["recv_frame", "send_frame"]

_HEADER = struct.Struct(">I")


def send_frame(
    stream: IO[bytes], header: dict[str, Any], payload: np.ndarray | None = None
) -> None:
    """Write one frame: ``header`` (``"nbytes"`` is filled in) and the array's raw bytes."""
    data = memoryview(b"") if payload is None else np.ascontiguousarray(payload).data.cast("B")
    raw = json.dumps({**header, "nbytes": len(data)}).encode("utf-8")
    stream.write(_HEADER.pack(len(raw)))
    stream.write(raw)
    if len(data):
        stream.write(data)
    stream.flush()


def _read_exactly(stream: IO[bytes], n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        chunk = stream.readinto(view[got:])  # type: ignore[attr-defined]  # pipes opened in binary mode have readinto
        if not chunk:
            raise EOFError
        got += chunk
    return buf


def recv_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytearray]:
    """Read one frame: ``(header, payload bytes)``.

    Raises:
        EOFError: the stream ended (mid-frame or between frames).
        ValueError: the header is not JSON (not our framing).
    """
    (size,) = _HEADER.unpack(bytes(_read_exactly(stream, _HEADER.size)))
    header: dict[str, Any] = json.loads(bytes(_read_exactly(stream, size)))
    return header, _read_exactly(stream, int(header.get("nbytes", 0)))
