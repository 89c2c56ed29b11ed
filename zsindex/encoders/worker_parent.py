"""The parent's side of the text worker: :class:`TextWorker` and :func:`start_text_worker`.

The parent tokenizes (with the standalone CLIP BPE tokenizer, no torch) while the child started
here imports torch and loads the text tower; token ids go over a pipe in the frames of
:mod:`zsindex.encoders.worker_frames` and features come back. Why this pays off, and when, is in
:mod:`zsindex.encoders.text_worker`. :meth:`TextWorker.close` kills the child at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.encoders.fast_tokenizer import standalone_context_length
from zsindex.encoders.text import CheckFn, tokenize_then_encode
from zsindex.encoders.text_forward import ProgressFn
from zsindex.encoders.worker_frames import recv_frame, send_frame
from zsindex.errors import ERRORS_BY_CODE, ModelError

if TYPE_CHECKING:
    from zsindex.encoders.encoder import Encoder
    from zsindex.encoders.info import ModelInfo

__all__ = ["PART_PROMPTS", "TextWorker", "start_text_worker"]

log = logging.getLogger(__name__)


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
            send_frame(proc.stdin, header, payload)
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _reply(self) -> tuple[dict[str, Any], bytearray]:
        proc = self._live()
        self._clean_error = False
        if proc.stdout is None:  # pragma: no cover - always a pipe
            raise RuntimeError("the text encoder worker has no output pipe")
        try:
            header, payload = recv_frame(proc.stdout)
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
