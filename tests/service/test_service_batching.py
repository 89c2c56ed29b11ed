"""Micro-batching: concurrent requests share one encoder forward; results go back to their owner."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image
from svc_backends import COLORS, RecordingBackend, recording_backend

from zsindex.config import Settings
from zsindex.errors import InvalidInputError
from zsindex.options import ClassifyOptions
from zsindex.service.batching import BatchingConfig, Job, MicroBatcher, run_jobs
from zsindex.service.metrics import ServiceMetrics


def _image(i: int) -> Image.Image:
    return Image.new("RGB", (8, 8), ((37 * i) % 256, (91 * i) % 256, (13 * i) % 256))


def _job(backend: RecordingBackend, name: str, n: int, start: int = 0, **options: Any) -> Job:
    """A job as the classify route builds it: each image prepared by the pipeline's own
    ``prepare`` stage (decode + the model's preprocessing), options checked with defaults."""
    loaded = backend.resolve(name)
    names = [f"{name}-{start + i}" for i in range(n)]
    images = [
        backend.pipeline.prepare(loaded, _image(start + i), names[i], fast_decode=False)
        for i in range(n)
    ]
    return Job(
        loaded=loaded,
        image_names=names,
        options=backend.pipeline.options(ClassifyOptions(**{"k": 2, **options})),
        images=images,
    )


@pytest.fixture
def backend(settings: Settings) -> Iterator[RecordingBackend]:
    """The real backend with two label sets of the same model (so they can share forwards)."""
    b = recording_backend(settings, a=COLORS, b=["cat", "dog"])
    yield b
    b.close()


def test_run_jobs_merges_forwards_and_splits_results(backend: RecordingBackend) -> None:
    jobs = [_job(backend, "a", 2), _job(backend, "b", 3, start=2), _job(backend, "a", 1, start=5)]
    outcomes = run_jobs(backend.pipeline, jobs)
    assert backend.encode_calls == [6]  # one forward for the shared model
    assert sorted(backend.classify_calls) == [3, 3]  # one per (label set, options)
    for job, outcome in zip(jobs, outcomes, strict=True):
        assert isinstance(outcome, list)
        assert [r.image for r in outcome] == job.image_names
        assert all(r.labelset == job.loaded.name for r in outcome)
    # Same numbers as encoding and classifying each job alone (real forwards of other sizes).
    for job, outcome in zip(jobs, outcomes, strict=True):
        emb = backend.pipeline.encode(job.loaded, job.images)
        alone = backend.pipeline.score(job.loaded, emb, job.image_names, job.options)
        assert [r.image for r in alone] == [r.image for r in outcome]
        for a, b in zip(alone, outcome, strict=True):
            assert a.version == b.version == job.loaded.version
            assert a.predictions[0].label == b.predictions[0].label
            assert {p.label: p.score for p in a.predictions} == pytest.approx(
                {p.label: p.score for p in b.predictions}, abs=1e-4
            )


def test_run_jobs_isolates_a_failing_request(backend: RecordingBackend) -> None:
    good = _job(backend, "a", 2)
    bad = _job(backend, "a", 1, start=9)
    bad.embeddings = np.ones((1, 3), dtype=np.float32)  # wrong dimension
    bad.images = []
    other_options = _job(backend, "a", 1, start=4, k=1)
    outcomes = run_jobs(backend.pipeline, [good, bad, other_options])
    assert isinstance(outcomes[0], list) and len(outcomes[0]) == 2
    assert isinstance(outcomes[1], InvalidInputError)
    assert isinstance(outcomes[2], list) and len(outcomes[2][0].predictions) == 1


def test_encoder_failure_is_retried_per_job(backend: RecordingBackend, monkeypatch) -> None:
    calls: list[int] = []
    real = backend.pipeline.encode
    ok = _job(backend, "a", 2)
    broken = _job(backend, "a", 1)
    [bad_input] = broken.images

    def flaky(loaded: Any, inputs: Sequence[Any]) -> np.ndarray:
        calls.append(len(inputs))
        if any(x is bad_input for x in inputs):
            raise InvalidInputError("bad image")
        return real(loaded, inputs)

    monkeypatch.setattr(backend.pipeline, "encode", flaky)
    outcomes = run_jobs(backend.pipeline, [ok, broken])
    assert calls == [3, 2, 1]
    assert isinstance(outcomes[0], list) and isinstance(outcomes[1], InvalidInputError)


async def _submit_concurrently(batcher: MicroBatcher, jobs: list[Job]) -> list[Any]:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(j) for j in jobs))
    finally:
        await batcher.stop()


def test_batcher_gathers_concurrent_requests(backend: RecordingBackend) -> None:
    backend.encode_delay_s = 0.05
    metrics = ServiceMetrics()
    batcher = MicroBatcher(
        backend.pipeline, BatchingConfig(max_batch_images=32, max_wait_s=0.02), metrics
    )
    jobs = [_job(backend, "a" if i % 2 else "b", 1, start=i) for i in range(12)]
    results = asyncio.run(_submit_concurrently(batcher, jobs))
    assert sum(backend.encode_calls) == 12
    assert len(backend.encode_calls) <= 2, backend.encode_calls  # 12 requests, ≤ 2 forwards
    for job, res in zip(jobs, results, strict=True):
        assert [r.image for r in res] == job.image_names
        assert res[0].labelset == job.loaded.name


def test_batcher_respects_max_batch_images(backend: RecordingBackend) -> None:
    batcher = MicroBatcher(backend.pipeline, BatchingConfig(max_batch_images=4, max_wait_s=0.02))
    jobs = [_job(backend, "a", 3, start=3 * i) for i in range(4)]
    asyncio.run(_submit_concurrently(batcher, jobs))
    assert backend.encode_calls == [3, 3, 3, 3]  # 3 + 3 > 4: never merged past the cap
    backend.encode_calls.clear()
    backend.encode_delay_s = 0.05  # the first forward runs while the others queue up
    jobs = [_job(backend, "a", 1, start=i) for i in range(9)]
    asyncio.run(_submit_concurrently(batcher, jobs))
    assert sum(backend.encode_calls) == 9 and max(backend.encode_calls) == 4
    assert len(backend.encode_calls) <= 4, backend.encode_calls  # restarted after stop() too


def test_batching_off_runs_each_request_alone(backend: RecordingBackend) -> None:
    batcher = MicroBatcher(backend.pipeline, BatchingConfig(enabled=False))
    jobs = [_job(backend, "a", 1, start=i) for i in range(6)]
    asyncio.run(_submit_concurrently(batcher, jobs))
    assert backend.encode_calls == [1] * 6


def test_model_work_runs_off_the_event_loop(backend: RecordingBackend, monkeypatch) -> None:
    threads: list[str] = []
    real = backend.pipeline.encode

    def spy(loaded: Any, inputs: Sequence[Any]) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return real(loaded, inputs)

    monkeypatch.setattr(backend.pipeline, "encode", spy)
    for enabled in (True, False):
        batcher = MicroBatcher(backend.pipeline, BatchingConfig(enabled=enabled))
        asyncio.run(_submit_concurrently(batcher, [_job(backend, "a", 1)]))
    assert threads and all(name.startswith("zsindex-model") for name in threads)


def test_abandoned_jobs_are_skipped(backend: RecordingBackend) -> None:
    backend.encode_delay_s = 0.2

    async def scenario() -> None:
        batcher = MicroBatcher(backend.pipeline, BatchingConfig(max_batch_images=1, max_wait_s=0.0))
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(_job(backend, "a", 1)))
            await asyncio.sleep(0.02)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(batcher.submit(_job(backend, "a", 1, start=1)), 0.05)
            await first
            await asyncio.sleep(0.05)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert backend.encode_calls == [1]  # the timed-out job never reached the model


def test_a_batch_waits_only_for_requests_on_their_way(backend: RecordingBackend) -> None:
    # A long max_wait: whatever is merged is decided by arrivals, not by the clock.
    config = BatchingConfig(max_batch_images=32, max_wait_s=1.0)

    async def scenario(announce: bool) -> None:
        batcher = MicroBatcher(backend.pipeline, config)
        await batcher.start()

        async def late_request() -> list[Any]:
            with contextlib.ExitStack() as stack:
                if announce:  # as the route does while it reads and decodes the request
                    stack.enter_context(batcher.arriving())
                await asyncio.sleep(0.1)
            return await batcher.submit(_job(backend, "a", 1, start=1))

        try:
            late = asyncio.create_task(late_request())
            await asyncio.sleep(0)  # the late request starts (and announces itself) first
            await asyncio.gather(batcher.submit(_job(backend, "a", 1)), late)
        finally:
            await batcher.stop()

    asyncio.run(scenario(announce=True))
    assert backend.encode_calls == [2]  # the first waited for the announced one
    backend.encode_calls.clear()
    asyncio.run(scenario(announce=False))
    assert backend.encode_calls == [1, 1]  # nobody on the way: the first ran alone, at once
