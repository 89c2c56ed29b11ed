"""Safe reading of weight files and loading them into open_clip models.

Safetensors files are preferred. ``.bin``/``.pt``/``.pth`` files are read with
``torch.load(weights_only=True)`` and **nothing else**: a pickle that needs arbitrary code is
refused with :class:`ModelError` and never unpickled. (open_clip's own ``load_state_dict`` falls
back to a full, unsafe ``torch.load`` when the restricted one raises ``TypeError``; zsindex never
calls it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsindex.errors import ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "WEIGHT_SUFFIXES",
    "check_weights_file",
    "load_weights_into",
    "read_logit_params",
    "read_state_dict",
]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def check_weights_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is an existing file with a supported suffix; raise otherwise."""
    if not path.is_file():
        raise ModelError(f"{what}: weights file {path} does not exist")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ModelError(
            f"{what}: weights file {path} has an unsupported suffix; use .safetensors "
            "(preferred) or a .bin/.pt/.pth state dict"
        )
    return path


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"weights file {path} does not hold a state dict")
    out = dict(obj)
    if next(iter(out)).startswith("module"):
        out = {k[7:]: v for k, v in out.items()}
    return out


def _torch_load(path: Path, *, mmap: bool) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        if mmap and "mmap" in str(exc).lower():
            return _torch_load(path, mmap=False)
        raise ModelError(
            f"refusing to load {path}: it is not a plain tensor checkpoint readable with "
            f"torch.load(weights_only=True) ({_one_line(exc)[:300]}); convert it to .safetensors"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or, with ``weights_only=True``, ``.bin/.pt/.pth``.

    Raises:
        ModelError: unreadable, unsafe (pickled code) or not a state dict.
    """
    import torch

    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: dict[str, Any] = load_file(str(p), device="cpu")
        except Exception as exc:
            raise ModelError(f"cannot read safetensors file {p}: {_one_line(exc)}") from None
    else:
        state = _unwrap(_torch_load(p, mmap=False), p)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"weights file {p} holds non-tensor entries (e.g. {bad[0]!r})")
    return state


def _logit_from_numpy(raw: Any) -> float:
    import numpy as np

    return float(np.exp(np.asarray(raw, dtype=np.float32).reshape(-1)[0]))


def read_logit_params(path: str | Path) -> tuple[float, float | None] | None:
    """Read ``(exp(logit_scale), logit_bias)`` from a weights file without building a model.

    The exponential is taken in float32 with numpy, whatever the file format, so the value is
    the same in every process; it may differ from ``model.logit_scale.exp().item()`` (torch's
    float32 ``exp``) in the last bit (relative 1e-7), which no score or probability notices.
    Returns ``None`` when the file has no ``logit_scale`` under a standard key.

    Raises:
        ModelError: the file is unreadable or unsafe.
    """
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        return _safetensors_logits(p)
    state = _unwrap(_torch_load(p, mmap=True), p)
    if "logit_scale" not in state:
        return None
    scale = _logit_from_numpy(state["logit_scale"].float().numpy())
    bias = state.get("logit_bias")
    return scale, (None if bias is None else float(bias.float().reshape(-1)[0].item()))


def _safetensors_logits(p: Path) -> tuple[float, float | None] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="numpy") as fh:
            keys = set(fh.keys())
            if "logit_scale" not in keys:
                return None
            try:
                scale_raw = fh.get_tensor("logit_scale")
                bias_raw = fh.get_tensor("logit_bias") if "logit_bias" in keys else None
            except Exception:  # e.g. bfloat16, which numpy cannot hold
                return _safetensors_logits_torch(p)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot read safetensors file {p}: {_one_line(exc)}") from None
    bias = None
    if bias_raw is not None:
        import numpy as np

        bias = float(np.asarray(bias_raw, dtype=np.float32).reshape(-1)[0])
    return _logit_from_numpy(scale_raw), bias


def _safetensors_logits_torch(p: Path) -> tuple[float, float | None] | None:
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as fh:
        keys = set(fh.keys())
        scale = _logit_from_numpy(fh.get_tensor("logit_scale").float().numpy())
        bias = (
            fh.get_tensor("logit_bias").float().reshape(-1)[0].item()
            if "logit_bias" in keys
            else None
        )
    return float(scale), bias


def load_weights_into(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str
) -> None:
    """Load a state dict into an open_clip model the way ``open_clip.load_checkpoint`` does.

    Raises:
        ModelError: the weights do not fit the architecture.
    """
    import torch
    from open_clip.convert import convert_state_dict
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    sd = convert_state_dict(model, dict(state_dict))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    scale = getattr(model, "logit_scale", None)
    bias = getattr(model, "logit_bias", None)
    if (
        "logit_scale" in sd
        and isinstance(scale, torch.Tensor)
        and scale.ndim != sd["logit_scale"].ndim
    ):
        sd["logit_scale"] = sd["logit_scale"].reshape(scale.shape)
    if "logit_bias" in sd and isinstance(bias, torch.Tensor) and bias.ndim != sd["logit_bias"].ndim:
        sd["logit_bias"] = sd["logit_bias"].reshape(bias.shape)
    if "logit_bias" not in sd and isinstance(bias, torch.Tensor) and "logit_scale" in sd:
        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    sd.pop("text.transformer.embeddings.position_ids", None)
    try:
        resize_pos_embed(sd, model)
        resize_text_pos_embed(sd, model)
        model.load_state_dict(sd, strict=True)
    except Exception as exc:
        msg = _one_line(exc)
        raise ModelError(
            f"{what}: the weights do not match the architecture ({msg[:400]}"
            f"{'…' if len(msg) > 400 else ''})"
        ) from None
