"""Read open_clip's zero-shot metadata without importing torch.

``open_clip/__init__.py`` imports torch, but ``open_clip/zero_shot_metadata.py`` is a plain data
module (three tuples, no imports). When open_clip is not imported yet, that one file is executed
on its own under a private module name, so the real data is used while ``import zsindex.labels``
and the built-in plugins stay torch-free.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from zsindex.errors import PluginError

_MODULE = "open_clip.zero_shot_metadata"


@cache
def _metadata_module() -> ModuleType:
    loaded = sys.modules.get(_MODULE)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("open_clip")  # a top-level name: nothing is imported
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "zero_shot_metadata.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location("_zsindex_openclip_zsmeta", path)
            if file_spec is None or file_spec.loader is None:  # pragma: no cover - defensive
                break
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            return module
    raise PluginError(
        "open_clip's zero_shot_metadata.py was not found: install open_clip_torch "
        "(it is a dependency of zsindex)"
    )


def _as_format_strings(templates: tuple[object, ...]) -> tuple[str, ...]:
    # open_clip writes templates as lambdas (lambda c: f"a photo of a {c}."); calling each with
    # "{}" yields the equivalent format string.
    out = []
    for template in templates:
        text = template("{}") if callable(template) else template
        out.append(str(text))
    return tuple(out)


@cache
def imagenet_classnames() -> tuple[str, ...]:
    """Return open_clip's 1000 ImageNet class names, exactly as listed (duplicates included)."""
    return tuple(str(name) for name in _metadata_module().IMAGENET_CLASSNAMES)


@cache
def openai_imagenet_templates() -> tuple[str, ...]:
    """Return open_clip's 80 OpenAI ImageNet templates as ``{}`` format strings."""
    return _as_format_strings(tuple(_metadata_module().OPENAI_IMAGENET_TEMPLATES))


@cache
def simple_imagenet_templates() -> tuple[str, ...]:
    """Return open_clip's 7 "simple" ImageNet templates as ``{}`` format strings."""
    return _as_format_strings(tuple(_metadata_module().SIMPLE_IMAGENET_TEMPLATES))
