"""The one image → prediction pipeline, used by every entry point.

decode (format from magic bytes, pixel limit from the header, EXIF orientation, RGB with alpha on
white) → the model's own open_clip preprocessing → batched ``encode_image`` → L2 norm → search →
probabilities → results.

The CLI, ``Client.local()`` and batch jobs call :meth:`ImagePipeline.run` (decoding in a thread
pool overlapped with batched forward passes); the HTTP service calls the same stages one by one
(:meth:`~ImagePipeline.check`, :meth:`~ImagePipeline.prepare`, then :meth:`~ImagePipeline.encode`
and :meth:`~ImagePipeline.score` from its micro-batcher), so one image gets one answer whichever
way it came in. Decoding is bit-exact open_clip by default; ``fast_decode`` (JPEG draft mode) is
the one explicit approximation, with the same meaning everywhere.
"""

from __future__ import annotations

import collections
import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.classify.engine import check_embeddings, check_options, classify_embeddings
from zsindex.classify.inputs import decode_data_url, is_data_url
from zsindex.classify.loaded import LoadedLabelSet
from zsindex.encoders.images import DEFAULT_MAX_PIXELS, ImageSource, check_image, load_image
from zsindex.errors import ImageError, InvalidInputError
from zsindex.options import DEFAULT_BEAM_TOLERANCE, ClassifyOptions, OnError
from zsindex.results import ClassificationResult

if TYPE_CHECKING:
    from zsindex.encoders.encoder import Encoder
    from zsindex.encoders.pool import EncoderPool


def as_image_source(item: object, index: int) -> ImageSource:
    """One user-given image as a path, bytes or PIL image; anything else is an error.

    A binary file object is read here (its bytes are the image), and so is a
    ``data:image/...;base64,`` URL. An ``int`` is never taken for a file descriptor.
    """
    from PIL import Image

    if isinstance(item, Image.Image | bytes | bytearray | memoryview):
        return item
    if is_data_url(item):
        return decode_data_url(str(item), f"images[{index}]")
    if isinstance(item, str | os.PathLike) and not isinstance(item, bytes):
        return Path(os.fspath(item))
    read = getattr(item, "read", None)
    if callable(read) and not isinstance(item, io.TextIOBase):
        data = read()
        if isinstance(data, bytes | bytearray):
            return bytes(data)
    raise InvalidInputError(
        f"images[{index}] must be a path, bytes, a binary file or a PIL image, "
        f"not {type(item).__name__}"
    )


def image_name(item: object, index: int) -> str:
    """How results name an image: its path as given, else (bytes, a data URL, …) its
    position."""
    if (
        isinstance(item, str | os.PathLike)
        and not isinstance(item, bytes)
        and not is_data_url(item)
    ):
        return os.fspath(item) if isinstance(os.fspath(item), str) else str(index)
    return str(index)


def given_names(image_names: Sequence[str] | None, count: int) -> list[str] | None:
    """Caller-given image names as strings, one per image (``None`` when none were given)."""
    if image_names is None:
        return None
    names = [str(n) for n in image_names]
    if len(names) != count:
        raise InvalidInputError(f"{len(names)} image names for {count} images")
    return names


def error_result(loaded: LoadedLabelSet, name: str, error: ImageError) -> ClassificationResult:
    """The result of an image that could not be classified (``on_error="report"``)."""
    return ClassificationResult(
        image=name,
        labelset=loaded.name,
        version=loaded.version,
        predictions=[],
        error=error.message,
        error_code=error.code,
    )


class ImagePipeline:
    """Images → predictions for loaded label sets.

    Args:
        encoders: where each label set's model comes from.
        fast_decode: the default for options that leave ``fast_decode`` unset.
        max_pixels: the largest image accepted (checked from the header before decoding).
        batch_size: images per forward pass in :meth:`run`.
        beam_tolerance: the adaptive beam's tolerance (``beam`` mode without a width).
    """

    def __init__(
        self,
        encoders: EncoderPool,
        *,
        fast_decode: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int = 32,
        beam_tolerance: float = DEFAULT_BEAM_TOLERANCE,
    ) -> None:
        self.encoders = encoders
        self.fast_decode = fast_decode
        self.beam_tolerance = beam_tolerance
        self.max_pixels = max_pixels
        self.batch_size = batch_size

    def options(self, options: ClassifyOptions) -> ClassifyOptions:
        """``options`` checked, with this pipeline's defaults filled in."""
        return options.check().with_defaults(fast_decode=self.fast_decode)

    def encoder(self, loaded: LoadedLabelSet) -> Encoder:
        """The label set's own model."""
        model = loaded.record.model
        return self.encoders.get(model.name, model.pretrained)

    # -- stages ---------------------------------------------------------------------------------

    def check(self, source: ImageSource, name: str, *, max_pixels: int | None = None) -> None:
        """Format (magic bytes) and pixel count from the header, without decoding."""
        check_image(source, max_pixels=max_pixels or self.max_pixels, name_for_errors=name)

    def prepare(
        self,
        loaded: LoadedLabelSet,
        source: ImageSource,
        name: str,
        *,
        fast_decode: bool,
        max_pixels: int | None = None,
    ) -> Any:
        """Decode one image and apply the model's preprocessing: the model's input tensor."""
        encoder = self.encoder(loaded)
        draft = encoder.image_size if fast_decode else None
        image = load_image(
            source,
            max_pixels=max_pixels or self.max_pixels,
            name_for_errors=name,
            draft_size=draft,
        )
        try:
            return encoder.preprocess(image)
        finally:
            if image is not source:
                image.close()

    def encode(self, loaded: LoadedLabelSet, inputs: Sequence[Any]) -> np.ndarray:
        """L2-normalised image embeddings ``[N, dim]`` of prepared inputs (one forward per
        batch)."""
        return self.encoder(loaded).encode_images(
            list(inputs), batch_size=max(self.batch_size, len(inputs)), draft=False
        )

    def score(
        self,
        loaded: LoadedLabelSet,
        embeddings: np.ndarray,
        names: Sequence[str],
        options: ClassifyOptions,
    ) -> list[ClassificationResult]:
        """Search, probabilities and results for image embeddings (any norm; made unit)."""
        emb = check_embeddings(embeddings, loaded.record.dim)
        if len(names) != len(emb):
            raise InvalidInputError(f"{len(names)} image names for {len(emb)} embeddings")
        return classify_embeddings(
            loaded, emb, list(names), options, beam_tolerance=self.beam_tolerance
        )

    # -- in process ------------------------------------------------------------------------------

    def run(
        self,
        loaded: LoadedLabelSet,
        sources: Sequence[ImageSource],
        names: Sequence[str],
        options: ClassifyOptions,
        *,
        on_error: OnError = "raise",
    ) -> list[ClassificationResult]:
        """Classify images in order; decoding overlaps the forward passes.

        Every header is checked before the model loads, so a bad file fails fast. With
        ``on_error="report"`` an image that fails becomes a result with ``error`` set and the
        others go on; with ``"raise"`` the first failure is raised.
        """
        options = self.options(options)
        check_options(loaded, options)  # before any image is read or the model loads
        embedded = self.embed(
            loaded, sources, names, fast_decode=bool(options.fast_decode), on_error=on_error
        )
        return self.score_embedded(loaded, embedded, names, options)

    def embed(
        self,
        loaded: LoadedLabelSet,
        sources: Sequence[ImageSource],
        names: Sequence[str],
        *,
        fast_decode: bool,
        on_error: OnError = "raise",
    ) -> Embedded:
        """L2-normalised embeddings of the images that could be read, with the model of
        ``loaded`` (any label set of that model gives the same numbers), and the errors of
        the others. Headers are checked first; decoding overlaps the forward passes."""
        errors: dict[int, ImageError] = {}
        for i, (source, name) in enumerate(zip(sources, names, strict=True)):
            try:
                self.check(source, name)
            except ImageError as exc:
                if on_error == "raise":
                    raise
                errors[i] = exc
        todo = [i for i in range(len(sources)) if i not in errors]
        rows: dict[int, np.ndarray] = {}
        if todo:

            def prepare(i: int) -> Any:
                try:
                    return self.prepare(loaded, sources[i], names[i], fast_decode=fast_decode)
                except ImageError as exc:
                    return exc

            self.encoder(loaded).load()  # once, before the decode threads need its transform
            for batch, inputs in _prepared_batches(todo, prepare, self.batch_size):
                good = []
                for i, item in zip(batch, inputs, strict=True):
                    if isinstance(item, ImageError):
                        if on_error == "raise":
                            raise item
                        errors[i] = item
                    else:
                        good.append((i, item))
                if good:
                    emb = self.encode(loaded, [x for _, x in good])
                    rows.update((i, emb[j]) for j, (i, _) in enumerate(good))
        return Embedded(count=len(sources), rows=rows, errors=errors)

    def score_embedded(
        self,
        loaded: LoadedLabelSet,
        embedded: Embedded,
        names: Sequence[str],
        options: ClassifyOptions,
    ) -> list[ClassificationResult]:
        """Results in image order: scored embeddings, and an error result per failed image."""
        done = sorted(embedded.rows)
        answers = iter(
            self.score(
                loaded,
                np.stack([embedded.rows[i] for i in done]),
                [names[i] for i in done],
                options,
            )
            if done
            else []
        )
        return [
            error_result(loaded, names[i], embedded.errors[i])
            if i in embedded.errors
            else next(answers)
            for i in range(embedded.count)
        ]


@dataclass(frozen=True)
class Embedded:
    """Image embeddings by position, and the errors of the images that failed.

    Attributes:
        count: how many images were given.
        rows: position → unit embedding ``[dim]`` (the images that could be read).
        errors: position → why that image could not be read.
    """

    count: int
    rows: dict[int, np.ndarray]
    errors: dict[int, ImageError]


def _prepared_batches(
    rows: list[int], prepare: Callable[[int], Any], batch_size: int
) -> Iterator[tuple[list[int], list[Any]]]:
    """``prepare(row)`` for every row in a small thread pool, at most two batches ahead of
    the consumer (Pillow and torchvision release the GIL for the heavy parts), so memory
    stays bounded on long lists; yields (rows, prepared) one batch at a time, in order."""
    workers = min(4, os.cpu_count() or 1, len(rows))
    pending: collections.deque[Future[Any]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zsindex-decode") as ex:
        submitted = 0
        try:
            for start in range(0, len(rows), batch_size):
                while submitted < min(len(rows), start + 2 * batch_size):
                    pending.append(ex.submit(prepare, rows[submitted]))
                    submitted += 1
                batch = rows[start : start + batch_size]
                yield batch, [pending.popleft().result() for _ in batch]
        finally:
            for future in pending:
                future.cancel()
