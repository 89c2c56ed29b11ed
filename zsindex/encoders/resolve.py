"""Resolve ``--model NAME --pretrained TAG_OR_PATH`` to local files, cheaply.

Resolution never builds a model: it finds the open_clip config and the weights file (downloading
them only when online), hashes the weights (cached per process) and reads the logit scale and
bias straight from the weights file, so callers can look up cached label embeddings before paying
for a model load.

Accepted forms (as open_clip):

* an open_clip architecture with a pretrained tag (``ViT-B-32`` + ``laion2b_s34b_b79k``): the
  Hugging Face cache is checked first; a download is tried only if the Hub is reachable (a quick
  connection probe), so offline use fails fast with one line instead of minutes of retries;
* an open_clip architecture with a local checkpoint file (``.safetensors`` preferred; ``.bin``,
  ``.pt``, ``.pth`` are read with ``torch.load(weights_only=True)`` only);
* ``local-dir:/path`` (open_clip layout: ``open_clip_config.json`` + weights);
* ``hf-hub:org/repo`` (cached, or downloaded when online);
* ``zsindex-tiny``, the model shipped in ``zsindex/models/zsindex-tiny``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsindex.config import TINY_MODEL, NetworkSettings, network_from_env
from zsindex.encoders.downloads import WAYS_OUT, hf_fetch, tag_weights
from zsindex.encoders.info import ModelInfo, weights_sha256
from zsindex.encoders.weights import WEIGHT_SUFFIXES, check_weights_file, read_logit_params
from zsindex.errors import ModelError

__all__ = ["ResolvedModel", "resolve_model", "tiny_model_dir"]

log = logging.getLogger(__name__)

LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "open_clip_config.json"
# open_clip's own preference order for weights inside a folder.
_DIR_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_PREPROCESS_KEYS = ("mode", "mean", "std", "interpolation", "resize_mode", "fill_color")


@dataclass(frozen=True)
class ResolvedModel:
    """A model located on disk, not yet built.

    Attributes:
        name: canonical model name (recorded in :class:`ModelInfo`).
        pretrained: pretrained tag or absolute weights path, or ``None``.
        kind: ``builtin``, ``local-dir``, ``hf-hub`` or ``tiny``.
        arch: what ``open_clip.create_model`` is given (an architecture or ``local-dir:<dir>``).
        weights_path: the weights file.
        model_cfg: the open_clip model config.
        preprocess_overrides: preprocessing settings from the pretrained tag (empty otherwise).
        tokenizer_source: what ``open_clip.get_tokenizer`` is given.
        info: the model's identity, or ``None`` where the weights file does not hold the logit
            scale under a standard key (then it is read from the built model).
    """

    name: str
    pretrained: str | None
    kind: str
    arch: str
    weights_path: Path
    model_cfg: dict[str, Any] = field(repr=False, compare=False, hash=False)
    preprocess_overrides: dict[str, Any] = field(repr=False, compare=False, hash=False)
    tokenizer_source: str
    info: ModelInfo | None


def tiny_model_dir() -> Path:
    """The folder of the shipped ``zsindex-tiny`` model (its files may not exist yet)."""
    import zsindex

    return Path(zsindex.__file__).resolve().parent / "models" / TINY_MODEL


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _open_clip_config_dir() -> Path | None:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model_configs"


def builtin_model_config(name: str) -> dict[str, Any] | None:
    """An open_clip built-in config by name, read from its JSON file (no open_clip import)."""
    if "open_clip" in sys.modules:
        import open_clip

        cfg = open_clip.get_model_config(name)
        return dict(cfg) if cfg else None
    folder = _open_clip_config_dir()
    if folder is None:
        raise ModelError("open_clip is not installed: install open_clip_torch")
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    return cfg if isinstance(cfg, dict) else None


def _unknown_model(name: str) -> ModelError:
    return ModelError(
        f"unknown model {name!r}: not an open_clip architecture, 'hf-hub:org/repo', "
        f"'local-dir:/path' or {TINY_MODEL!r}; list valid architectures with "
        '`python -c "import open_clip; print(open_clip.list_models())"`'
    )


def _read_dir_config(folder: Path, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise ModelError(f"{what}: {cfg_path} is missing (expected open_clip local-dir layout)")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{what}: cannot read {cfg_path}: {_one_line(exc)}") from None
    model_cfg = data.get("model_cfg") if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict):
        raise ModelError(f"{what}: {cfg_path} has no 'model_cfg' object")
    pp = data.get("preprocess_cfg") or {}
    return model_cfg, dict(pp) if isinstance(pp, dict) else {}


def _dir_weights(folder: Path) -> Path | None:
    for fname in _DIR_WEIGHTS:
        if (folder / fname).is_file():
            return folder / fname
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    found.sort(key=lambda p: p.suffix != ".safetensors")
    return found[0] if found else None


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or value.lower().endswith(WEIGHT_SUFFIXES)


def _make_info(
    name: str, pretrained: str | None, weights: Path, model_cfg: dict[str, Any]
) -> ModelInfo | None:
    try:
        sha = weights_sha256(weights)
    except OSError as exc:
        raise ModelError(f"cannot read weights {weights}: {_one_line(exc)}") from None
    params = read_logit_params(weights)
    if params is None:
        return None
    scale, bias = params
    text_cfg = model_cfg.get("text_cfg") or {}
    return ModelInfo(
        name=name,
        pretrained=pretrained,
        weights_sha256=sha,
        dim=int(model_cfg["embed_dim"]),
        logit_scale=scale,
        logit_bias=bias,
        context_length=int(text_cfg.get("context_length", 77)),
    )


def resolve_model(
    name: str,
    pretrained: str | None = None,
    *,
    cache_dir: str | None = None,
    allow_download: bool = True,
    network: NetworkSettings | None = None,
) -> ResolvedModel:
    """Locate a model's config and weights without building it.

    Args:
        name: open_clip architecture, ``hf-hub:org/repo``, ``local-dir:/path`` or ``zsindex-tiny``.
        pretrained: pretrained tag or weights path (architectures only; ignored with a warning for
            the other forms, which carry their own weights).
        cache_dir: download cache folder (default: the Hugging Face / open_clip defaults).
        allow_download: whether missing weights may be downloaded when online.
        network: offline flag, Hub address and proxies for the quick probe before a download
            (default: ``zsindex.config.network_from_env()``; ``Settings.network`` passes them).

    Raises:
        ModelError: unknown name, missing or unreadable weights, offline without cached weights.
            The message is one line and names the ways out.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelError("model name is empty")
    name = name.strip()
    if name == TINY_MODEL or name.startswith((LOCAL_DIR_PREFIX, HF_HUB_PREFIX)):
        if pretrained:
            log.warning(
                "ignoring pretrained=%r: model %r carries its own weights", pretrained, name
            )
        pretrained = None
    if name == TINY_MODEL:
        folder = tiny_model_dir()
        return _resolve_dir(folder, TINY_MODEL, "tiny", f"model {TINY_MODEL} (shipped in {folder})")
    if name.startswith(LOCAL_DIR_PREFIX):
        raw = name[len(LOCAL_DIR_PREFIX) :].strip()
        if not raw:
            raise ModelError("empty path after 'local-dir:'")
        folder = Path(raw).expanduser().resolve()
        if not folder.is_dir():
            raise ModelError(f"local-dir model folder {folder} does not exist")
        return _resolve_dir(folder, LOCAL_DIR_PREFIX + str(folder), "local-dir", f"model {name}")
    if name.startswith(HF_HUB_PREFIX):
        repo = name[len(HF_HUB_PREFIX) :].strip()
        if repo.count("/") != 1:
            raise ModelError(f"{name!r} is not of the form 'hf-hub:org/repo'")
        what = f"model {name}"
        net = network if network is not None else network_from_env()
        cfg_file = hf_fetch(
            repo, (CONFIG_NAME,), f"config of {what}", cache_dir, allow_download, net
        )
        model_cfg, _ = _read_dir_config(cfg_file.parent, what)
        weights = hf_fetch(
            repo,
            ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            f"weights of {what}",
            cache_dir,
            allow_download,
            net,
        )
        folder = cfg_file.parent
        return ResolvedModel(
            name=name,
            pretrained=None,
            kind="hf-hub",
            arch=LOCAL_DIR_PREFIX + str(folder),
            weights_path=weights,
            model_cfg=model_cfg,
            preprocess_overrides={},
            tokenizer_source=LOCAL_DIR_PREFIX + str(folder),
            info=_make_info(name, None, weights, model_cfg),
        )
    return _resolve_builtin(name, pretrained, cache_dir, allow_download, network)


def _resolve_dir(folder: Path, name: str, kind: str, what: str) -> ResolvedModel:
    if not folder.is_dir():
        raise ModelError(f"{what}: folder {folder} does not exist (incomplete install?)")
    model_cfg, _ = _read_dir_config(folder, what)
    weights = _dir_weights(folder)
    if weights is None:
        raise ModelError(
            f"{what}: no weights file in {folder} (expected open_clip_model.safetensors)"
        )
    return ResolvedModel(
        name=name,
        pretrained=None,
        kind=kind,
        arch=LOCAL_DIR_PREFIX + str(folder),
        weights_path=weights,
        model_cfg=model_cfg,
        preprocess_overrides={},
        tokenizer_source=LOCAL_DIR_PREFIX + str(folder),
        info=_make_info(name, None, weights, model_cfg),
    )


def _resolve_builtin(
    name: str,
    pretrained: str | None,
    cache_dir: str | None,
    allow_download: bool,
    network: NetworkSettings | None,
) -> ResolvedModel:
    arch = name.replace("/", "-")
    model_cfg = builtin_model_config(arch)
    if model_cfg is None:
        raise _unknown_model(name)
    if not pretrained:
        raise ModelError(
            f"model {arch} needs --pretrained (a pretrained tag or a weights file); list its tags "
            f'with `python -c "import open_clip; print(open_clip.list_pretrained_tags_by_model('
            f"'{arch}'))\"`, or {WAYS_OUT}"
        )
    pretrained = pretrained.strip()
    overrides: dict[str, Any] = {}
    tag_cfg: dict[str, Any] = {}
    if not _looks_like_path(pretrained):
        # As open_clip: a known tag first, then an existing file.
        from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

        tag_cfg = dict(get_pretrained_cfg(arch, pretrained) or {})
        if not tag_cfg and not Path(pretrained).expanduser().is_file():
            tags = list_pretrained_tags_by_model(arch)
            raise ModelError(
                f"pretrained={pretrained!r} is neither a known tag of {arch} nor an existing "
                f"file; known tags: {', '.join(tags) if tags else '(none)'}"
            )
    if tag_cfg:
        net = network if network is not None else network_from_env()
        weights = tag_weights(arch, pretrained, tag_cfg, cache_dir, allow_download, net)
        overrides = {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg}
        pretrained_id: str = pretrained
    else:
        weights = check_weights_file(
            Path(pretrained).expanduser().resolve(), f"model {arch} pretrained={pretrained!r}"
        )
        pretrained_id = str(weights)
    return ResolvedModel(
        name=arch,
        pretrained=pretrained_id,
        kind="builtin",
        arch=arch,
        weights_path=weights,
        model_cfg=model_cfg,
        preprocess_overrides=overrides,
        tokenizer_source=arch,
        info=_make_info(arch, pretrained_id, weights, model_cfg),
    )
