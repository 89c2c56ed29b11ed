"""Dynamic micro-batching of classify requests.

Requests arriving close together are merged into one model batch:

1. A route resolves its label set once (``backend.resolve`` → an immutable ``LoadedLabelSet``:
   one version per request), turns each image into the model's input with the one pipeline's
   ``prepare`` stage and submits a :class:`Job`.
2. The collector task takes the first waiting job, then keeps taking jobs until the batch holds
   ``max_batch_images`` images or ``max_wait_s`` has passed since the first one (whatever is
   already queued is taken without waiting). It waits only while another request is on its
   way (between the route's :meth:`MicroBatcher.arriving` and its submit: reading its body,
   decoding): a lone request runs at once instead of waiting for company that cannot come.
   While the model worker is busy, new jobs queue up, so batches grow with load by themselves.
3. The batch runs in the model worker thread (never on the event loop): jobs sharing a
   ``model_key`` get **one** ``encode_images`` forward on their merged images; then jobs sharing
   a label-set version and options get one ``score`` call (search, probabilities, results);
   results are split back per job. A failing merged call is retried job by job, so one bad
   request fails alone.

With batching off (``ZSINDEX_BATCHING=0``) every job runs on its own in the same worker, which is
the baseline of ``benchmarks/bench_service.py``. Jobs whose request has already given up (client
gone, timeout) are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from zsindex.errors import ImageError, InvalidInputError
from zsindex.options import ClassifyOptions
from zsindex.results import ClassificationResult
from zsindex.service.metrics import ServiceMetrics
from zsindex.settings_types import BatchingConfig  # defined with the settings; re-exported

log = logging.getLogger("zsindex.service.batching")


class ModelStages(Protocol):
    """The model stages of :class:`zsindex.classify.pipeline.ImagePipeline` that batches run."""

    def encode(self, loaded: Any, inputs: Sequence[Any]) -> np.ndarray: ...
    def score(
        self, loaded: Any, embeddings: np.ndarray, names: Sequence[str], options: ClassifyOptions
    ) -> list[ClassificationResult]: ...


@dataclass
class Job:
    """One request's model work: prepared images to encode, or precomputed embeddings.

    ``image_names`` names every image of the request; ``errors`` holds the ones that could not
    be prepared (each is answered with its own error result), and ``images`` the model inputs of
    the others, in order.
    """

    loaded: Any
    image_names: list[str]
    options: ClassifyOptions
    images: list[Any] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    errors: dict[int, ImageError] = field(default_factory=dict)
    future: asyncio.Future[list[ClassificationResult]] | None = None

    @property
    def size(self) -> int:
        return len(self.image_names)

    @property
    def abandoned(self) -> bool:
        return self.future is not None and self.future.done()

    def good_names(self) -> list[str]:
        return [n for i, n in enumerate(self.image_names) if i not in self.errors]

    def with_errors(self, results: list[ClassificationResult]) -> list[ClassificationResult]:
        """The request's results in order: the scored ones and an error result per failure."""
        if not self.errors:
            return results
        from zsindex.classify.pipeline import error_result

        scored = iter(results)
        return [
            error_result(self.loaded, name, self.errors[i]) if i in self.errors else next(scored)
            for i, name in enumerate(self.image_names)
        ]


Outcome = list[ClassificationResult] | BaseException


def run_jobs(stages: ModelStages, jobs: Sequence[Job]) -> list[Outcome]:
    """Run a batch of jobs synchronously (in the model worker) and return one outcome per job."""
    outcomes: list[Outcome | None] = [None] * len(jobs)
    embedded: dict[int, np.ndarray] = {}

    # 1. One encoder forward per model over the merged images.
    by_model: dict[Hashable, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        if job.embeddings is not None:
            embedded[i] = job.embeddings
        elif not job.images:
            outcomes[i] = job.with_errors([])  # every image failed to decode
        else:
            by_model[job.loaded.model_key].append(i)
    for indices in by_model.values():
        _encode_group(stages, jobs, indices, embedded, outcomes)

    # 2. One classify call per (label-set version, options) over the merged embeddings.
    by_target: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        if outcomes[i] is None:
            by_target[(id(job.loaded), job.options)].append(i)
    for indices in by_target.values():
        _classify_group(stages, jobs, indices, embedded, outcomes)
    return [o if o is not None else RuntimeError("job produced no result") for o in outcomes]


def _encode_group(
    stages: ModelStages,
    jobs: Sequence[Job],
    indices: list[int],
    embedded: dict[int, np.ndarray],
    outcomes: list[Outcome | None],
) -> None:
    images = [img for i in indices for img in jobs[i].images]
    try:
        matrix = np.asarray(stages.encode(jobs[indices[0]].loaded, images))
        if matrix.shape[0] != len(images):
            raise RuntimeError(f"encoder returned {matrix.shape[0]} rows for {len(images)} images")
    except Exception as exc:
        if len(indices) == 1:
            outcomes[indices[0]] = exc
            return
        for i in indices:  # isolate the failing request
            _encode_group(stages, jobs, [i], embedded, outcomes)
        return
    offset = 0
    for i in indices:
        n = len(jobs[i].images)
        embedded[i] = matrix[offset : offset + n]
        offset += n


def _classify_group(
    stages: ModelStages,
    jobs: Sequence[Job],
    indices: list[int],
    embedded: dict[int, np.ndarray],
    outcomes: list[Outcome | None],
) -> None:
    first = jobs[indices[0]]
    try:
        matrix = np.concatenate([embedded[i] for i in indices], axis=0)
        names = [name for i in indices for name in jobs[i].good_names()]
        results = stages.score(first.loaded, matrix, names, first.options)
        if len(results) != len(names):
            raise RuntimeError(f"classifier returned {len(results)} results for {len(names)}")
    except Exception as exc:
        if len(indices) == 1:
            outcomes[indices[0]] = exc
            return
        for i in indices:
            _classify_group(stages, jobs, [i], embedded, outcomes)
        return
    offset = 0
    for i in indices:
        n = len(embedded[i])
        outcomes[i] = jobs[i].with_errors(list(results[offset : offset + n]))
        offset += n


class MicroBatcher:
    """Gathers jobs from the event loop and runs them in the model worker thread."""

    def __init__(
        self,
        stages: ModelStages,
        config: BatchingConfig,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.stages = stages
        self.config = config
        self.metrics = metrics
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._carry: Job | None = None
        self._pending = 0
        self._arriving = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The model worker pool (created on first use, again after :meth:`stop`)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.model_workers, thread_name_prefix="zsindex-model"
            )
        return self._executor

    async def start(self) -> None:
        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        if self.config.enabled and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._collect(), name="zsindex-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._queue = None
        self._carry = None
        self._pending = 0
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- submitting ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request on its way to :meth:`submit` (reading, resolving, decoding).

        A gathered batch waits up to ``max_wait_s`` for company only while some request is
        arriving. Used on the event loop only (no lock needed); exit right before ``submit``.
        """
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, job: Job) -> list[ClassificationResult]:
        """Run ``job`` (batched with others when enabled) and return its results."""
        if job.size == 0:
            raise InvalidInputError("no images to classify")
        loop = asyncio.get_running_loop()
        if self._queue is None:
            outcome = (await loop.run_in_executor(self.executor, run_jobs, self.stages, [job]))[0]
            self._observe_batch(1, job.size)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        job.future = loop.create_future()
        self._pending += 1
        self._set_depth()
        self._queue.put_nowait(job)
        try:
            return await job.future
        finally:
            if not job.future.done():
                job.future.cancel()  # the collector skips it

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run other backend work (resolve, decode) off the event loop, not in the model worker."""
        return await asyncio.to_thread(fn, *args)

    # -- collecting -----------------------------------------------------------------------------

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._pending)

    def _observe_batch(self, requests: int, images: int) -> None:
        if self.metrics is not None:
            self.metrics.batch_requests.observe(requests)
            self.metrics.batch_images.observe(images)

    async def _next(self, timeout: float | None) -> Job | None:
        assert self._queue is not None
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            if timeout is None:
                return await self._queue.get()
            if timeout <= 0:
                return self._queue.get_nowait()
            return await asyncio.wait_for(self._queue.get(), timeout)
        except (asyncio.QueueEmpty, TimeoutError):
            return None

    async def _gather(self) -> list[Job]:
        first = await self._next(None)
        assert first is not None
        batch = [first]
        images = first.size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.max_wait_s
        while images < self.config.max_batch_images:
            assert self._queue is not None
            if self._carry is None and self._queue.empty() and self._arriving == 0:
                break  # nobody is on the way: waiting could only add latency
            job = await self._next(deadline - loop.time())
            if job is None:
                break
            if images + job.size > self.config.max_batch_images:
                self._carry = job  # first of the next batch
                break
            batch.append(job)
            images += job.size
        self._pending -= len(batch)
        self._set_depth()
        return [job for job in batch if not job.abandoned]

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(self.executor, run_jobs, self.stages, batch)
            except asyncio.CancelledError:
                for job in batch:
                    if job.future is not None and not job.future.done():
                        job.future.cancel()
                raise
            except Exception as exc:  # pragma: no cover - run_jobs catches per job
                outcomes = [exc] * len(batch)
            self._observe_batch(len(batch), sum(j.size for j in batch))
            log.debug(
                "batch of %d requests / %d images in %.1f ms",
                len(batch),
                sum(j.size for j in batch),
                (time.perf_counter() - started) * 1000,
            )
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.future is None or job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
