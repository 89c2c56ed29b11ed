"""``--engine local``: the job's parts one after another in this process.

Within a part the pipeline decodes in a thread pool two forward batches ahead of the model
(as ``zsindex classify`` does); the next part's shard bytes are read while this part runs.
Each part is committed before the next one starts, so a killed job loses at most the part in
flight, and a rerun redoes only that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from zsindex.batch.inputs import InputItem, read_item
from zsindex.errors import ImageError

if TYPE_CHECKING:
    from zsindex.batch.plan import JobPlan
    from zsindex.batch.worker import BatchWorker, PartOutput
    from zsindex.encoders.images import ImageSource

Commit = Callable[[int, "PartOutput"], None]


def read_part(items: Sequence[InputItem]) -> list[ImageSource | ImageError]:
    """Each item's image (a path, or a shard member's bytes), or why it cannot be read."""
    out: list[ImageSource | ImageError] = []
    for item in items:
        try:
            out.append(read_item(item))
        except ImageError as exc:
            out.append(exc)
        except OSError as exc:
            out.append(ImageError(f"{item.source}: cannot read ({exc.strerror or exc})"))
    return out


def run_local(
    plan: JobPlan,
    worker: BatchWorker,
    pending: Sequence[int],
    commit: Commit,
    embeddings: Callable[[range], object] | None = None,
) -> None:
    """Run ``pending`` parts in order, committing each as it completes.

    Args:
        embeddings: for a job over stored embeddings, returns a part's ``[n, dim]`` vectors.
    """
    if plan.from_embeddings:
        if embeddings is None:  # pragma: no cover - the job passes it for such plans
            raise ValueError("a job over stored embeddings needs their reader")
        for number in pending:
            rows = plan.part(number)
            items = [plan.items[i] for i in rows]
            commit(
                number,
                worker.run_embeddings(
                    list(rows),
                    [it.source for it in items],
                    embeddings(rows),  # type: ignore[arg-type]
                ),
            )
        return
    for number, images in _prefetched(plan, pending):
        rows = plan.part(number)
        sources = [plan.items[i].source for i in rows]
        commit(number, worker.run_part(list(rows), sources, images))


def _prefetched(
    plan: JobPlan, pending: Sequence[int]
) -> Iterator[tuple[int, list[ImageSource | ImageError]]]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsindex-batch-read") as pool:
        ahead: Future[list[ImageSource | ImageError]] | None = None
        for pos, number in enumerate(pending):
            if ahead is None:
                ahead = pool.submit(read_part, [plan.items[i] for i in plan.part(number)])
            images = ahead.result()
            ahead = (
                pool.submit(read_part, [plan.items[i] for i in plan.part(pending[pos + 1])])
                if pos + 1 < len(pending)
                else None
            )
            yield number, images
