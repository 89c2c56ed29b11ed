"""Finding pretrained weights in local caches, downloading them only when the network answers.

The Hugging Face cache (and open_clip's URL cache) is checked first, without any request. A
download is tried only when a quick probe (:mod:`zsindex.encoders.network`) reaches the Hub, so
offline use fails in seconds with one line naming the ways out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zsindex.encoders.network import hub_reachable, url_reachable
from zsindex.encoders.weights import check_weights_file
from zsindex.errors import ModelError
from zsindex.settings_types import NetworkSettings

__all__ = ["WAYS_OUT", "hf_fetch", "tag_weights"]

WAYS_OUT = (
    "use a local weights file (--pretrained /path/to/weights.safetensors), a local open_clip "
    "folder (--model local-dir:/path), or the shipped model (--model zsindex-tiny)"
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _hf_cached(repo: str, filename: str, cache_dir: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is an open_clip dependency
        return None
    hit = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    return Path(hit) if isinstance(hit, str) else None


def hf_fetch(
    repo: str,
    filenames: tuple[str, ...],
    what: str,
    cache_dir: str | None,
    allow_download: bool,
    network: NetworkSettings,
) -> Path:
    """The first of ``filenames`` in the HF cache, else downloaded if the Hub is reachable."""
    for fname in filenames:
        hit = _hf_cached(repo, fname, cache_dir)
        if hit is not None:
            return hit
    missing = f"{what} ({repo}/{filenames[0]}) is not in the local cache"
    if not allow_download:
        raise ModelError(f"{missing} and downloads are disabled: {WAYS_OUT}")
    if not hub_reachable(network):
        raise ModelError(
            f"{missing} and the Hugging Face Hub is unreachable (offline?): {WAYS_OUT}"
        )
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for fname in filenames:
        try:
            return Path(hf_hub_download(repo_id=repo, filename=fname, cache_dir=cache_dir))
        except Exception as exc:  # huggingface_hub raises many types; translate all
            last = exc
    raise ModelError(f"{missing} and the download failed ({_one_line(last)}): {WAYS_OUT}")


def tag_weights(
    arch: str,
    tag: str,
    tag_cfg: dict[str, Any],
    cache_dir: str | None,
    allow_download: bool,
    network: NetworkSettings,
) -> Path:
    what = f"weights for {arch} pretrained={tag!r}"
    if tag_cfg.get("file"):
        return check_weights_file(Path(tag_cfg["file"]), what)
    hub = tag_cfg.get("hf_hub") or ""
    if hub:
        if hub.endswith("/"):
            repo, fname = hub[:-1], "open_clip_pytorch_model.bin"
        else:
            repo, fname = os.path.split(hub)
        names: tuple[str, ...] = (fname,)
        if fname == "open_clip_pytorch_model.bin":
            names = ("open_clip_model.safetensors", fname)
        elif fname.endswith((".bin", ".pth")):
            names = (fname[:-4] + ".safetensors", fname)
        return hf_fetch(repo, names, what, cache_dir, allow_download, network)
    url = tag_cfg.get("url") or ""
    if not url:
        raise ModelError(f"{what}: open_clip lists no download source")
    target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    if target.is_file():
        return target
    if not allow_download:
        raise ModelError(f"{what} are not cached ({target}) and downloads are disabled: {WAYS_OUT}")
    if not url_reachable(url, network):
        raise ModelError(f"{what} are not cached ({target}) and {url} is unreachable: {WAYS_OUT}")
    from open_clip.pretrained import download_pretrained_from_url

    try:
        return Path(download_pretrained_from_url(url, cache_dir=cache_dir))
    except Exception as exc:
        raise ModelError(f"{what}: download failed ({_one_line(exc)}): {WAYS_OUT}") from None
