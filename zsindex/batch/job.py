"""``zsindex.batch.run``: one batch job, on the local engine or on Ray Data.

start → pin each label set's version → expand the inputs (or read stored embeddings) → plan
the parts → open the output folder (resume this job's committed parts, refuse another job's)
→ run the pending parts on the engine, committing each → write the summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zsindex.batch.inputs import InputItem, expand_inputs
from zsindex.batch.output import PREDICTIONS, OutputFolder
from zsindex.batch.plan import DEFAULT_PART_SIZE, JobPlan, LabelSetRequest, pin_labelsets
from zsindex.errors import InvalidInputError
from zsindex.options import ClassifyOptions

if TYPE_CHECKING:
    from zsindex.batch.worker import PartOutput
    from zsindex.config import Settings

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")
OnProgress = Callable[[int, int, float], None]
"""Called with (images done, images in the job, seconds since start) after each part."""


@dataclass(frozen=True)
class RayOptions:
    """How ``--engine ray`` runs.

    Attributes:
        address: the cluster (``None``: ``RAY_ADDRESS``, else a local cluster started here).
        workers: actors that encode and classify (``None``: one per CPU, or per GPU).
        num_gpus_per_worker: GPUs each actor holds (0: CPU actors).
        num_cpus_per_worker: CPUs each actor holds (its torch threads).
        batch_size: images per actor call.
    """

    address: str | None = None
    workers: int | None = None
    num_gpus_per_worker: float = 0.0
    num_cpus_per_worker: float = 1.0
    batch_size: int = 64


@dataclass(frozen=True)
class BatchSummary:
    """What a job did (also written to ``DIR/_summary.json``)."""

    output: str
    engine: str
    images: int
    labelsets: list[str]
    rows: int
    errors: int
    parts: int
    parts_skipped: int
    images_this_run: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images_this_run / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 3)}


def run(
    inputs: Sequence[str],
    labels: Sequence[str | LabelSetRequest],
    output: str | Path,
    *,
    engine: Engine = "local",
    options: ClassifyOptions | None = None,
    save_embeddings: bool = False,
    embeddings: bool = False,
    overwrite: bool = False,
    part_size: int = DEFAULT_PART_SIZE,
    fast_decode: bool | None = None,
    ray: RayOptions | None = None,
    settings: Settings | None = None,
    on_progress: OnProgress | None = None,
) -> BatchSummary:
    """Classify every input against every label set into ``output`` (see the README's
    "Batch jobs").

    Args:
        inputs: files, folders, globs, CSV/Parquet lists of paths, ``.tar`` shards; with
            ``embeddings``: Parquet embeddings (files or folders) or ``.npy`` matrices.
        labels: ``NAME``, ``NAME@N`` or ``NAME[@N]:k=3,mode=beam,...`` (options for that label
            set), or :class:`LabelSetRequest` objects; pinned at start.
        output: the output folder (see :mod:`zsindex.batch.output`).
        engine: ``local`` (this process) or ``ray`` (Ray Data; ``pip install zsindex[ray]``).
        options: the classify options every label set starts from (default k=5, flat).
        save_embeddings: also write each image's embedding to ``output/embeddings``.
        embeddings: the inputs are stored embeddings, not images (no encoder runs).
        overwrite: replace another job's output in ``output``.
        part_size: inputs per committed part (the unit of resumption).
        fast_decode: JPEG draft-mode decoding (``None``: the ``ZSINDEX_FAST_DECODE`` setting).
        ray: how the Ray engine runs.
        settings: store, model and device settings (default: from the environment).
        on_progress: called after each committed part.
    """
    from zsindex.config import Settings
    from zsindex.local import LocalBackend

    if engine not in ENGINES:
        raise InvalidInputError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "ray":
        from zsindex.batch.ray_engine import require_ray

        require_ray()
    settings = settings or Settings.from_env()
    defaults = (options or ClassifyOptions()).check()
    requests = [
        x if isinstance(x, LabelSetRequest) else LabelSetRequest.parse(x, defaults) for x in labels
    ]
    fast = settings.fast_decode if fast_decode is None else bool(fast_decode)
    started = time.perf_counter()
    backend = LocalBackend(settings)
    try:
        tasks = pin_labelsets(backend, requests)
        vectors = None
        if embeddings:
            items, vectors = _stored_items(inputs, tasks)
        else:
            items = expand_inputs(inputs)
        plan = JobPlan(
            items=items,
            tasks=tasks,
            part_size=part_size,
            save_embeddings=save_embeddings,
            fast_decode=fast,
            from_embeddings=embeddings,
        )
        folder = OutputFolder(Path(output), plan.manifest(), overwrite=overwrite)
        done = folder.open()
        pending = [p for p in range(plan.num_parts) if p not in done]
        progress = _Progress(plan, done, started, on_progress)

        def commit(number: int, out: PartOutput) -> None:
            folder.commit(number, out.predictions, out.embeddings)
            progress.part_done(number)

        if engine == "local":
            from zsindex.batch.local_engine import run_local
            from zsindex.batch.worker import BatchWorker

            worker = BatchWorker(backend, tasks, fast_decode=fast, save_embeddings=save_embeddings)
            reader = (lambda rows: vectors[rows.start : rows.stop]) if vectors is not None else None
            run_local(plan, worker, pending, commit, reader)
        else:
            from zsindex.batch.ray_engine import run_ray

            draft = 0
            if fast and not embeddings:
                draft = max(
                    backend.pipeline.encoder(backend.resolve(t.pinned)).image_size or 0
                    for t in tasks
                )
            run_ray(plan, settings, pending, commit, ray or RayOptions(), vectors, draft)
        summary = _summarise(folder, plan, engine, len(done), progress.images_this_run, started)
        folder.finish(summary.to_dict())
        return summary
    finally:
        backend.close()


def _stored_items(inputs: Sequence[str], tasks: Sequence[Any]) -> tuple[list[InputItem], Any]:
    import numpy as np

    from zsindex.batch.stored import read_stored

    if not inputs:
        raise InvalidInputError("give one or more files or folders of stored embeddings")
    items: list[InputItem] = []
    blocks = []
    for given in inputs:
        stored = read_stored(Path(given))
        for task in tasks:
            stored.check_model(task.pinned, task.model, task.fingerprint, task.dim)
        items.extend(InputItem(source=s, path=given) for s in stored.sources)
        blocks.append(stored.vectors)
    if len({b.shape[1] for b in blocks}) > 1:
        raise InvalidInputError("the embeddings given have different dimensions")
    return items, np.concatenate(blocks)


class _Progress:
    def __init__(
        self, plan: JobPlan, done: set[int], started: float, callback: OnProgress | None
    ) -> None:
        self.plan = plan
        self.started = started
        self.callback = callback
        self.images_done = sum(len(plan.part(p)) for p in done)
        self.images_this_run = 0

    def part_done(self, number: int) -> None:
        n = len(self.plan.part(number))
        self.images_done += n
        self.images_this_run += n
        if self.callback is not None:
            self.callback(
                self.images_done, len(self.plan.items), time.perf_counter() - self.started
            )


def _summarise(
    folder: OutputFolder,
    plan: JobPlan,
    engine: str,
    skipped: int,
    images_this_run: int,
    started: float,
) -> BatchSummary:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(folder.root / PREDICTIONS, format="parquet").to_table(
        columns=["input_index", "error"]
    )
    failed = table.filter(pc.is_valid(table.column("error")))
    return BatchSummary(
        output=str(folder.root),
        engine=engine,
        images=len(plan.items),
        labelsets=[t.pinned for t in plan.tasks],
        rows=table.num_rows,
        errors=len(set(failed.column("input_index").to_pylist())),
        parts=plan.num_parts,
        parts_skipped=skipped,
        images_this_run=images_this_run,
        seconds=round(time.perf_counter() - started, 3),
    )
