"""Building open_clip models from resolved files, with a per-process cache.

A standard CLIP (the ``ViT-*`` and ``RN*`` architectures, ``zsindex-tiny``) is built with torch
alone (:mod:`zsindex.encoders.plain_model`: the same modules, weights and preprocess, open_clip's
numbers bit for bit, ~2-5 s less import time for a one-shot command); any other model, or one
that does not pass that module's gate, is built by open_clip.

Models are cached by ``(name, pretrained, device, weights SHA-256)``; tokenizers separately by
name, so a caller that only needs to count tokens never builds a model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zsindex.encoders.resolve import ResolvedModel
from zsindex.encoders.weights import load_weights_into, read_state_dict
from zsindex.errors import ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "LoadedModel",
    "clear_model_cache",
    "get_loaded",
    "get_tokenizer",
    "model_cache_stats",
    "resolve_device",
    "use_plain_models",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A built model with its inference preprocessing and (built on first use) tokenizer."""

    model: torch.nn.Module
    preprocess: Callable[[Any], Any]
    device: str
    tokenizer_factory: Callable[[], Callable[..., Any]] = field(repr=False)

    @property
    def tokenizer(self) -> Callable[..., Any]:
        """The model's tokenizer. Built on first use (then cached per model by
        :func:`get_tokenizer`): a process that only encodes token ids, such as the text worker,
        skips reading the BPE vocabulary (0.2–0.4 s)."""
        return self.tokenizer_factory()


_LOCK = threading.RLock()
_MODELS: dict[tuple[str, str | None, str, str], LoadedModel] = {}
_TOKENIZERS: dict[str, Callable[..., Any]] = {}
_STATS = {"models_built": 0, "model_cache_hits": 0, "tokenizers_built": 0}
_PLAIN = [True]  # see use_plain_models


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def resolve_device(device: str | None) -> str:
    """``auto``/``None`` → ``cuda`` if available, else ``cpu``; others are checked by torch."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    assert device is not None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"invalid device {device!r}: {_one_line(exc)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return str(dev)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    # We build with load_weights=False and load the weights ourselves; open_clip would warn that
    # the model "initialized randomly", which is not true for the result we hand out.
    root = logging.getLogger()
    flt = _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def get_tokenizer(source: str) -> Callable[..., Any]:
    """An open_clip tokenizer for an architecture or ``local-dir:`` folder (cached)."""
    with _LOCK:
        tok = _TOKENIZERS.get(source)
        if tok is not None:
            return tok
    import open_clip

    try:
        built: Callable[..., Any] = open_clip.get_tokenizer(source)
    except Exception as exc:
        raise ModelError(
            f"cannot build the tokenizer of {source!r} ({type(exc).__name__}: "
            f"{_one_line(exc)[:300]}); Hugging Face tokenizers need the `transformers` package "
            "and their files cached or a network connection"
        ) from None
    with _LOCK:
        _TOKENIZERS[source] = built
        _STATS["tokenizers_built"] += 1
    return built


def use_plain_models(enabled: bool) -> None:
    """Whether models built from now on may be built with torch alone where that is exact
    (the default) or always with open_clip (benchmarks compare the two; already cached models
    stay as built, :func:`clear_model_cache` drops them)."""
    _PLAIN[0] = bool(enabled)


def _build_plain(resolved: ResolvedModel, device: str) -> LoadedModel | None:
    """The model built with torch alone where it is a standard CLIP (see
    :mod:`zsindex.encoders.plain_model`), else ``None``."""
    from zsindex.encoders.plain_model import plain_model_supported, read_plain_model

    if not plain_model_supported(resolved.model_cfg):
        return None
    built = read_plain_model(
        resolved.model_cfg,
        resolved.weights_path,
        resolved.arch,
        resolved.preprocess_overrides,
        device,
    )
    if built is None:
        return None
    model, preprocess = built
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        device=device,
        tokenizer_factory=functools.partial(get_tokenizer, resolved.tokenizer_source),
    )


def _build(resolved: ResolvedModel, device: str, plain: bool | None = None) -> LoadedModel:
    if _PLAIN[0] if plain is None else plain:
        loaded = _build_plain(resolved, device)
        if loaded is not None:
            return loaded
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    what = f"model {resolved.name}" + (
        f" pretrained={resolved.pretrained}" if resolved.pretrained else ""
    )
    state = read_state_dict(resolved.weights_path)
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(
                resolved.arch,
                pretrained=None,
                load_weights=False,
                device="cpu",
                force_preprocess_cfg=dict(resolved.preprocess_overrides) or None,
                pretrained_text=False,
                pretrained_image=False,
            )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"cannot build {what}: {type(exc).__name__}: {_one_line(exc)[:300]}"
        ) from None
    load_weights_into(model, state, what)
    del state
    model.to(device)
    model.eval()
    visual = getattr(model, "visual", None)
    preprocess = image_transform_v2(PreprocessCfg(**visual.preprocess_cfg), is_train=False)  # type: ignore[union-attr]  # open_clip's visual tower attributes are untyped
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        device=device,
        tokenizer_factory=functools.partial(get_tokenizer, resolved.tokenizer_source),
    )


def get_loaded(resolved: ResolvedModel, device: str) -> LoadedModel:
    """The built model for ``resolved`` on ``device``, from the process cache when present."""
    # The weights hash is part of the key, so a file replaced on disk is loaded afresh.
    sha = resolved.info.weights_sha256 if resolved.info is not None else ""
    key = (resolved.name, resolved.pretrained, device, sha)
    with _LOCK:
        hit = _MODELS.get(key)
        if hit is not None:
            _STATS["model_cache_hits"] += 1
            return hit
        loaded = _build(resolved, device)
        _MODELS[key] = loaded
        _STATS["models_built"] += 1
        log.info("loaded model %s (%s) on %s", resolved.name, resolved.pretrained, device)
        return loaded


def model_cache_stats() -> dict[str, int]:
    """Counters: ``models_built``, ``model_cache_hits``, ``tokenizers_built``, ``cached_models``."""
    with _LOCK:
        return {**_STATS, "cached_models": len(_MODELS)}


def clear_model_cache() -> None:
    """Drop cached models and tokenizers (counters are kept)."""
    with _LOCK:
        _MODELS.clear()
        _TOKENIZERS.clear()
