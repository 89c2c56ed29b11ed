"""A child process that loads the text tower while this one parses, validates and tokenizes.

A one-shot ``zsindex labels add`` spends ~5 s importing torch and open_clip (which pulls
torchvision, timm and ``torch._dynamo``) and building the model, and ~3 s parsing, validating,
hashing and tokenizing its labels. Imports are Python bytecode: a thread cannot overlap them with
other Python work, a process can. :func:`start_text_worker` starts ``python -m
zsindex.encoders.text_worker``, which imports and loads the model at once; meanwhile this process
does everything that needs no torch (tokenizing with the standalone CLIP BPE tokenizer) and then
hands the token ids over. The worker returns the same L2-normalised features
:meth:`Encoder.encode_tokens` would compute: a standard CLIP text tower it builds with torch
alone (:mod:`zsindex.encoders.plain_tower`, ~2 s sooner ready than importing open_clip); any
other model as open_clip builds it, through that very method.

This pays off only where this process has not imported open_clip yet and has two CPUs: a running
service or a program that already holds a model encodes in process. Models resolved without
open_clip qualify (``zsindex-tiny``, ``local-dir:``, ``hf-hub:``, an architecture with a weights
file); an architecture with a pretrained tag needs open_clip to read the tag, so it loads in
process.

Protocol (the worker's stdin and stdout; the worker's own prints go to stderr): each frame is a
4-byte big-endian header length, a JSON header, and ``header["nbytes"]`` bytes of array payload.
One request is outstanding at a time, and the child reads requests on a thread as they arrive,
so neither side can block on a full pipe while the other waits for it.

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

The worker exits when its stdin closes (noticed between requests; while loading or encoding, at
its next write); :meth:`TextWorker.close` kills it at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from zsindex.encoders.fast_tokenizer import standalone_context_length
from zsindex.encoders.text import CheckFn, tokenize_then_encode
from zsindex.errors import ERRORS_BY_CODE, ModelError, ZsindexError

if TYPE_CHECKING:
    from zsindex.encoders.encoder import Encoder
    from zsindex.encoders.info import ModelInfo

__all__ = ["TextWorker", "start_text_worker"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
_HEADER = struct.Struct(">I")


# -- framing ---------------------------------------------------------------------------------


def _send(stream: IO[bytes], header: dict[str, Any], payload: np.ndarray | None = None) -> None:
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
        chunk = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError
        got += chunk
    return buf


def _recv(stream: IO[bytes]) -> tuple[dict[str, Any], bytearray]:
    (size,) = _HEADER.unpack(bytes(_read_exactly(stream, _HEADER.size)))
    header: dict[str, Any] = json.loads(bytes(_read_exactly(stream, size)))
    return header, _read_exactly(stream, int(header.get("nbytes", 0)))


# -- parent side -----------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Prompts per part sent while the rest tokenize (two tree chunks: little prefix sharing lost).
PART_PROMPTS = 16384
PIPE_BYTES = 1 << 20  # Linux's default most for a pipe (/proc/sys/fs/pipe-max-size)


def _widen_pipe(fd: int) -> None:
    """Grow a pipe from 64 KiB to 1 MiB where the OS allows: features come back ~3x faster
    (115k x 128 floats: 0.33 s -> 0.12 s)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):  # not Linux, or a lower limit: keep it
        pass


def _child_env() -> dict[str, str]:
    """This environment, with the folder holding *this* zsindex first on ``PYTHONPATH``: the
    child must run the same code as its parent even when that came from a source checkout in
    the current directory (which -P leaves out)."""
    import site

    import zsindex

    root = Path(zsindex.__file__).resolve().parent.parent
    env = dict(os.environ)
    site_dirs = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in site_dirs:  # an installed zsindex is found anyway; PYTHONPATH precedes stdlib
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


def start_text_worker(encoder: Encoder) -> TextWorker | None:
    """A :class:`TextWorker` for ``encoder``'s model, or ``None`` where one would not pay off:
    open_clip already imported here, the model already loaded, fewer than two CPUs, a wrapped
    model, a model whose identity needs the model built, or a tokenizer that needs open_clip."""
    if "open_clip" in sys.modules or encoder.is_loaded or _cpu_count() < 2:
        return None
    resolved = encoder.resolved
    if resolved is None or resolved.info is None:
        return None
    if standalone_context_length(resolved.model_cfg, resolved.tokenizer_source) is None:
        return None
    try:
        return TextWorker(encoder)
    except OSError as exc:  # no process to be had (EAGAIN, ENOMEM): encode in process
        log.warning("cannot start a text encoder worker (%s); loading the model here", exc)
        return None


class _WorkerDied(ModelError):
    """The worker process ended without an answer."""


class TextWorker:
    """The parent's handle: a :class:`~zsindex.encoders.text.TextRuntime` whose model runs in
    the child (``encoder`` says which model, and tokenizes here without open_clip). Close it
    (or use it as a context manager) to stop the child."""

    def __init__(self, encoder: Encoder) -> None:
        resolved = encoder.resolved
        if resolved is None:
            raise ValueError("a TextWorker needs a resolved model, not a wrapped one")
        self._encoder = encoder
        self._ready = False
        self._clean_error = False
        self._fallback = False
        # How the worker runs the model, once it is ready: ``plain`` (no open_clip), ``open_clip``
        # or, where the worker died before loading, ``in-process``.
        self.runtime: str | None = None
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            # -P: never import from the current directory (a dataset folder may hold a
            # "numpy.py"); the console script that started us does not either.
            [sys.executable, "-P", "-m", "zsindex.encoders.text_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
        )
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                _widen_pipe(stream.fileno())
        log.debug("text encoder worker %d started for %s", self._proc.pid, resolved.name)
        self._request(
            {
                "op": "load",
                "model": resolved.name,
                "pretrained": resolved.pretrained,
                "device": encoder.device_request,
                "precision": encoder.precision,
                "log_level": logging.getLogger().getEffectiveLevel(),
            }
        )

    @property
    def info(self) -> ModelInfo:
        return self._encoder.info

    def tokenize_prompts(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        # Without open_clip: start_text_worker took only models with a standalone tokenizer.
        return self._encoder.tokenize_prompts(prompts)

    def encode_tokens(
        self, tokens: np.ndarray, *, batch_size: int, progress: ProgressFn | None = None
    ) -> np.ndarray:
        self._wait_ready()
        if self._fallback:
            return self._encoder.encode_tokens(tokens, batch_size=batch_size, progress=progress)
        ids = np.ascontiguousarray(tokens, dtype=np.int32)
        self._request({"op": "encode", "shape": list(ids.shape), "batch_size": batch_size}, ids)
        return self._read_result(ids.shape[0], progress)

    def _read_result(self, rows: int, progress: ProgressFn | None) -> np.ndarray:
        """Progress frames, then the features of the ``rows`` prompts sent."""
        try:
            while True:
                header, payload = self._reply()
                if header.get("op") == "progress":
                    if progress is not None:
                        progress(int(header["done"]), int(header["total"]))
                    continue
                shape = tuple(int(x) for x in header.get("shape", ()))
                if (
                    header.get("op") != "result"
                    or len(shape) != 2
                    or shape[0] != rows
                    or len(payload) != shape[0] * shape[1] * 4
                ):
                    raise ModelError(f"the text encoder worker sent a bad reply: {header}")
                return np.frombuffer(payload, dtype=np.float32).reshape(shape)
        except BaseException:
            # An error frame leaves the worker usable; anything else (a bad reply, a progress
            # callback that raised, Ctrl-C) leaves it mid-answer: stop it.
            if not self._clean_error:
                self.close()
            raise

    def tokenize_and_encode(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int,
        progress: ProgressFn | None,
        check: CheckFn,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokenize here in parts of ``PART_PROMPTS``, each sent as soon as it is ready: the
        worker encodes the first parts while this process tokenizes the next ones. A thread
        sends them, so a part larger than the pipe never stalls the tokenizing."""
        if self._fallback or self._proc is None or len(prompts) <= PART_PROMPTS:
            return tokenize_then_encode(
                self, prompts, batch_size=batch_size, progress=progress, check=check
            )
        parts: queue.Queue[tuple[dict[str, Any], np.ndarray] | None] = queue.Queue()
        failed: list[BaseException] = []
        sender = threading.Thread(
            target=self._send_parts, args=(parts, failed), name="zsindex-text-parts", daemon=True
        )
        sender.start()
        tokens: list[np.ndarray] = []
        truncated: list[np.ndarray] = []
        try:
            for start in range(0, len(prompts), PART_PROMPTS):
                part, part_truncated = self.tokenize_prompts(prompts[start : start + PART_PROMPTS])
                tokens.append(part)
                truncated.append(part_truncated)
                last = start + PART_PROMPTS >= len(prompts)
                header = {
                    "op": "encode",
                    "shape": list(part.shape),
                    "batch_size": batch_size,
                    "offset": start,
                    "total": len(prompts),
                    "last": last,
                }
                parts.put((header, np.ascontiguousarray(part, dtype=np.int32)))
            all_tokens, all_truncated = np.concatenate(tokens), np.concatenate(truncated)
            check(all_tokens, all_truncated)
        except BaseException:
            self.close()  # the worker may be mid-part: stop it (the sender then stops too)
            raise
        finally:
            parts.put(None)
            sender.join()
        self._wait_ready()
        if self._fallback:  # it died before loading: everything here
            features = self._encoder.encode_tokens(
                all_tokens, batch_size=batch_size, progress=progress
            )
        elif failed:
            raise self._died()
        else:
            features = self._read_result(len(prompts), progress)
        return all_tokens, all_truncated, features

    def _send_parts(
        self,
        parts: queue.Queue[tuple[dict[str, Any], np.ndarray] | None],
        failed: list[BaseException],
    ) -> None:
        """The sender thread: write parts until ``None``; after a failure, drain the queue."""
        while (item := parts.get()) is not None:
            if failed:
                continue
            try:
                self._request(*item)
            except BaseException as exc:  # the worker died; the caller finds out how
                failed.append(exc)

    def close(self) -> None:
        """Stop the child (at once: it holds nothing that needs a clean shutdown)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a broken pipe to a killed child
                    stream.close()

    def __enter__(self) -> TextWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals
    def _live(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("the text encoder worker is closed")
        return self._proc

    def _request(self, header: dict[str, Any], payload: np.ndarray | None = None) -> None:
        proc = self._live()
        assert proc.stdin is not None
        try:
            _send(proc.stdin, header, payload)
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _reply(self) -> tuple[dict[str, Any], bytearray]:
        proc = self._live()
        self._clean_error = False
        if proc.stdout is None:  # pragma: no cover - always a pipe
            raise RuntimeError("the text encoder worker has no output pipe")
        try:
            header, payload = _recv(proc.stdout)
        except (EOFError, OSError):
            raise self._died() from None
        except ValueError:  # not our framing: a broken worker
            self.close()
            raise ModelError("the text encoder worker sent a garbled reply") from None
        if header.get("op") == "error":
            self._clean_error = True
            cls = ERRORS_BY_CODE.get(str(header.get("code")), ModelError)
            raise cls(str(header.get("message")))
        return header, payload

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            header, _ = self._reply()
        except _WorkerDied as exc:
            # It died before loading anything (cannot start Python, cannot import): the
            # model can still load here; an error while loading it is answered, not a death.
            log.warning("%s; loading the model in this process", exc.message)
            self.close()
            self._fallback = self._ready = True
            self.runtime = "in-process"
            return
        self.runtime = str(header.get("runtime"))
        log.debug("text encoder worker ready (%s)", self.runtime)
        info = self._encoder.info
        if header.get("fingerprint") != info.fingerprint or header.get("dim") != info.dim:
            raise ModelError(
                f"the text encoder worker loaded another model than {info.name} "
                f"(fingerprint {header.get('fingerprint')!r}); was the model file replaced?"
            )
        self._ready = True

    def _died(self) -> _WorkerDied:
        proc = self._live()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        how = (
            f"was killed by signal {-code}" + (" (out of memory?)" if -code == 9 else "")
            if code < 0
            else f"exited with code {code}"
        )
        return _WorkerDied(f"the text encoder worker {how}; its error, if any, is above")


# -- child side ------------------------------------------------------------------------------


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
    from zsindex.encoders.text import encode_prompts

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
                header, payload = _recv(self._inp)
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
    _send(out, {"op": "progress", "done": offset + done, "total": of if total is None else total})


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    from zsindex.encoders.encoder import load_encoder

    header, _ = _recv(inp)
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
        _send(out, _error_frame(exc))
        return
    ready = {"op": "ready", "fingerprint": info.fingerprint, "dim": info.dim, "runtime": runtime}
    _send(out, ready)
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
            _send(out, _error_frame(exc))
            parts.clear()
            skipping = in_parts and not last
            continue
        parts.append(emb.astype(np.float32, copy=False))
        if last:
            result = parts[0] if len(parts) == 1 else np.concatenate(parts)
            parts.clear()
            _send(out, {"op": "result", "shape": list(result.shape)}, result)


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


if __name__ == "__main__":
    main()
