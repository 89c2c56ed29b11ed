"""``--engine ray``: the job on Ray Data (``pip install 'zsindex[ray]'``).

Ray Data reads the pending inputs (one row per image), decodes them in CPU tasks (header
check, then the same decode as everywhere: EXIF, RGB, alpha on white), and an actor pool
encodes and classifies them: each actor holds one :class:`~zsindex.batch.worker.BatchWorker`,
so the model and the pinned label sets load once per actor. Ray retries a task or restarts an
actor that dies (Ray Data's actor pools restart without limit); the driver is the one
committer: it collects the rows of each part, drops any row a retried task sent twice, and
commits a part, atomically, once it holds every (image, label set) row of it. A killed driver
loses only uncommitted parts, which a rerun redoes.

The store must be reachable from every node (PostgreSQL on a real cluster; a SQLite file works
for a local cluster on one machine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.errors import (
    ImageError,
    ImageTooLargeError,
    InvalidInputError,
    UnsupportedImageFormatError,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from zsindex.batch.job import RayOptions
    from zsindex.batch.plan import JobPlan
    from zsindex.batch.worker import PartOutput
    from zsindex.config import Settings

DECODE_CPUS = 0.25
"""Logical CPUs a decode task asks for: decoding is short and overlaps the actors' forwards."""

_ERRORS: dict[str, type[ImageError]] = {
    cls.code: cls for cls in (ImageError, ImageTooLargeError, UnsupportedImageFormatError)
}


def require_ray() -> None:
    """One line saying what to install when Ray Data is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InvalidInputError(
            "--engine ray needs Ray Data: pip install 'zsindex[ray]' (or use --engine local)"
        ) from None


def image_error(code: str, message: str) -> ImageError:
    """An image error sent across processes as its code and message."""
    return _ERRORS.get(code, ImageError)(message)


def decode_batch(batch: dict[str, np.ndarray], max_pixels: int, draft_size: int) -> dict[str, Any]:
    """Ray task: read and decode each image to an RGB ``uint8`` array (an error code and
    message instead for one that cannot be read)."""
    from zsindex.batch.inputs import InputItem
    from zsindex.batch.local_engine import read_part
    from zsindex.encoders.images import check_image, load_image

    items = [
        InputItem(source=str(s), path=str(p), offset=int(o), size=int(z))
        for s, p, o, z in zip(
            batch["source"], batch["path"], batch["offset"], batch["size"], strict=True
        )
    ]
    pixels: list[np.ndarray] = []
    codes: list[str] = []
    messages: list[str] = []
    for item, image in zip(items, read_part(items), strict=True):
        array = np.zeros((1, 1, 3), dtype=np.uint8)
        code = message = ""
        try:
            if isinstance(image, ImageError):
                raise image
            check_image(image, max_pixels=max_pixels, name_for_errors=item.source)
            # The actor applies the model's preprocessing to this decoded image, as the
            # pipeline's prepare stage does after its own decode.
            decoded = load_image(
                image,
                max_pixels=max_pixels,
                name_for_errors=item.source,
                draft_size=draft_size or None,
            )
            array = np.asarray(decoded, dtype=np.uint8)
            decoded.close()
        except ImageError as exc:
            code, message = exc.code, exc.message
        pixels.append(array)
        codes.append(code)
        messages.append(message)
    out = np.empty(len(pixels), dtype=object)
    out[:] = pixels
    return {
        "idx": batch["idx"],
        "part": batch["part"],
        "source": batch["source"],
        "pixels": out,
        "error_code": np.asarray(codes, dtype=object),
        "error_message": np.asarray(messages, dtype=object),
    }


class ClassifyActor:
    """Ray actor: one ``BatchWorker`` (model + pinned label sets loaded once)."""

    def __init__(
        self,
        settings: Settings,
        tasks: list[dict[str, Any]],
        save_embeddings: bool,
        threads: int,
    ) -> None:
        import torch

        from zsindex.batch.plan import LabelSetTask
        from zsindex.batch.worker import BatchWorker
        from zsindex.local import LocalBackend

        torch.set_num_threads(max(1, threads))
        self.tasks = [LabelSetTask.from_manifest(t) for t in tasks]
        self.backend = LocalBackend(settings)
        self.worker = BatchWorker(
            self.backend, self.tasks, fast_decode=False, save_embeddings=save_embeddings
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from PIL import Image

        indices = [int(i) for i in batch["idx"]]
        sources = [str(s) for s in batch["source"]]
        if "vector" in batch:
            vectors = np.stack([np.asarray(v, dtype=np.float32) for v in batch["vector"]])
            out = self.worker.run_embeddings(indices, sources, vectors)
        else:
            images: list[Any] = [
                image_error(str(code), str(msg)) if code else Image.fromarray(px, mode="RGB")
                for px, code, msg in zip(
                    batch["pixels"], batch["error_code"], batch["error_message"], strict=True
                )
            ]
            out = self.worker.run_part(indices, sources, images)
        return _wire_table(out, [int(p) for p in batch["part"]], indices)


def _wire_table(out: PartOutput, parts: list[int], indices: list[int]) -> pa.Table:
    """Predictions with their part, and each image's embedding on its first row."""
    import pyarrow as pa

    part_of = dict(zip(indices, parts, strict=True))
    table = out.predictions
    part_column = pa.array([part_of[int(i)] for i in table.column("input_index").to_pylist()])
    table = table.append_column("part", part_column)
    if out.embeddings is not None:
        emb = out.embeddings.column("embedding").combine_chunks()
        by_index = {
            i: pos for pos, i in enumerate(out.embeddings.column("input_index").to_pylist())
        }
        first = table.column("labelset").to_pylist()[0] if table.num_rows else None
        take = [
            by_index[i] if name == first else None
            for i, name in zip(
                table.column("input_index").to_pylist(),
                table.column("labelset").to_pylist(),
                strict=True,
            )
        ]
        table = table.append_column("embedding", emb.take(pa.array(take, pa.int64())))
    return table


class PartCollector:
    """The driver's side: rows by part, deduplicated; a complete part is committed."""

    def __init__(
        self,
        plan: JobPlan,
        pending: Sequence[int],
        commit: Callable[[int, PartOutput], None],
    ) -> None:
        self.plan = plan
        self.commit = commit
        self.task_order = {t.name: i for i, t in enumerate(plan.tasks)}
        self.rows: dict[int, dict[tuple[int, int], dict[str, Any]]] = {p: {} for p in pending}
        self.expected = {p: len(plan.part(p)) * len(plan.tasks) for p in pending}

    def add(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            part = int(row.pop("part"))
            rows = self.rows.get(part)
            if rows is None:  # already committed: a retried task's duplicate
                continue
            key = (self.task_order[row["labelset"]], int(row["input_index"]))
            rows.setdefault(key, row)
            if len(rows) == self.expected[part]:
                self._commit(part)

    def missing(self) -> list[int]:
        return sorted(self.rows)

    def _commit(self, part: int) -> None:
        from zsindex.batch.output import embeddings_table, prediction_schema, predictions_table
        from zsindex.batch.worker import PartOutput

        rows = self.rows.pop(part)
        ordered = [rows[key] for key in sorted(rows)]
        cols = {name: [r[name] for r in ordered] for name in prediction_schema().names}
        embeddings = None
        if self.plan.save_embeddings:
            first = self.plan.tasks[0]
            mine = [r for r in ordered if r["labelset"] == first.name]
            vectors = {
                pos: np.asarray(r["embedding"], dtype=np.float32)
                for pos, r in enumerate(mine)
                if r.get("embedding") is not None
            }
            embeddings = embeddings_table(
                [r["input_index"] for r in mine],
                [r["source"] for r in mine],
                vectors,
                first.dim,
                first.model_key,
            )
        errors = len({r["input_index"] for r in ordered if r["error"] is not None})
        self.commit(
            part,
            PartOutput(
                predictions=predictions_table(cols),
                embeddings=embeddings,
                images=len(self.plan.part(part)),
                errors=errors,
            ),
        )


def _connect(address: str | None) -> bool:
    """Connect to the cluster (or start a local one); whether this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        address=address,  # None: Ray's own RAY_ADDRESS, else a local cluster
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=True,
    )
    return True


def default_workers(options: RayOptions) -> int:
    import ray

    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    if options.num_gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // options.num_gpus_per_worker))
    cpus = float(resources.get("CPU", 1)) - 2 * DECODE_CPUS
    return max(1, int(cpus // max(options.num_cpus_per_worker, 0.01)))


def run_ray(
    plan: JobPlan,
    settings: Settings,
    pending: Sequence[int],
    commit: Callable[[int, PartOutput], None],
    options: RayOptions,
    vectors: np.ndarray | None,
    draft_size: int = 0,
) -> None:
    """Run ``pending`` parts on Ray Data; commit each as its last row arrives.

    Args:
        draft_size: with ``fast_decode``, the model's input side (JPEG draft decoding keeps
            both sides at least this); 0 decodes at full size.
    """
    import ray
    import ray.data

    from zsindex.encoders.images import DEFAULT_MAX_PIXELS

    if not pending:
        return
    started = _connect(options.address)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        rows = []
        for part in pending:
            for i in plan.part(part):
                item = plan.items[i]
                row: dict[str, Any] = {
                    "idx": i,
                    "part": part,
                    "source": item.source,
                    "path": item.path,
                    "offset": item.offset,
                    "size": item.size,
                }
                if vectors is not None:
                    row["vector"] = vectors[i]
                rows.append(row)
        workers = options.workers or default_workers(options)
        blocks = max(1, min(len(rows) // max(1, options.batch_size // 2), 4096))
        ds: Any = ray.data.from_items(rows, override_num_blocks=blocks)
        if vectors is None:
            ds = ds.map_batches(
                decode_batch,
                batch_format="numpy",
                batch_size=max(1, options.batch_size // 2),
                fn_kwargs={"max_pixels": DEFAULT_MAX_PIXELS, "draft_size": draft_size},
                num_cpus=DECODE_CPUS,
            )
        actor_settings = settings
        if options.num_gpus_per_worker > 0 and settings.device == "auto":
            actor_settings = replace(settings, device="cuda")
        ds = ds.map_batches(
            ClassifyActor,
            batch_format="numpy",
            batch_size=options.batch_size,
            fn_constructor_kwargs={
                "settings": actor_settings,
                "tasks": [t.to_manifest() for t in plan.tasks],
                "save_embeddings": plan.save_embeddings,
                "threads": max(1, round(options.num_cpus_per_worker)),
            },
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=options.num_cpus_per_worker,
            num_gpus=options.num_gpus_per_worker or None,
        )
        collector = PartCollector(plan, pending, commit)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            collector.add(batch)
        if collector.missing():  # pragma: no cover - Ray returns every row or raises
            raise RuntimeError(f"the Ray job ended without parts {collector.missing()[:5]}")
    finally:
        if started:
            ray.shutdown()
