"""The public names and signatures users rely on (DESIGN.md §3), pinned.

A change here is a change of the public surface: extend it deliberately (and DESIGN.md with
it), never by accident.
"""

from __future__ import annotations

import inspect

import zsindex
from zsindex import backend, options, results
from zsindex.client import Client


def _params(fn: object) -> list[str]:
    return [
        f"{p.name}={p.default!r}" if p.default is not p.empty else p.name
        for p in inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
    ]


def test_top_level_names() -> None:
    assert zsindex.__all__ == ["Client", "Settings", "__version__"]
    assert zsindex.Client is Client


def test_module_exports() -> None:
    assert backend.__all__ == ["Backend", "EmbedInternal", "ImageInput"]
    assert {"ClassifyOptions", "LabelSource", "LabelNames"} <= set(vars(options))
    for name in ("ClassificationResult", "Prediction", "PathStep", "LabelSetInfo", "LabelTree"):
        assert hasattr(results, name), name


def test_client_signatures() -> None:
    assert _params(Client.__init__) == [
        "self",
        "base_url",
        "api_key=None",
        "timeout=120.0",
        "http=None",
        "transport=None",
    ]
    assert _params(Client.local) == [
        "database_url=None",
        "device=None",
        "home=None",
        "settings=None",
    ]
    assert _params(Client.add_labelset) == [
        "self",
        "name",
        "labels=None",
        "templates=None",
        "parents=None",
        "model=None",
        "pretrained=None",
        "plugin=None",
        "content=None",
        "format=None",
        "allow_duplicates=False",
        "strict=False",
        "index=None",
    ]
    assert _params(Client.import_labelset) == [
        "self",
        "name",
        "embeddings",
        "names",
        "parents=None",
        "model=None",
        "pretrained=None",
        "index=None",
    ]
    assert _params(Client.classify) == [
        "self",
        "images=None",
        "labelset",
        "embeddings=None",
        "k=5",
        "mode='flat'",
        "rank=None",
        "beam=None",
        "within=None",
        "min_confidence=None",
        "activation='softmax'",
        "fast_decode=None",
        "reject_below=None",
        "options=None",
        "on_error='raise'",
    ]
    # Few-shot and calibration (issue 18): {label: images}, a new version each.
    assert _params(Client.tune_labelset) == ["self", "name", "examples", "alpha='auto'"]
    assert _params(Client.calibrate) == ["self", "name", "examples", "target_precision=None"]
    for name in ("labelsets", "labelset", "history", "delete_labelset", "embeddings", "tree"):
        assert callable(getattr(Client, name)), name
    # Version pinning: reads take NAME@N; a rollback publishes version N as a new current one.
    assert _params(Client.rollback) == ["self", "name", "version"]
    assert _params(backend.Backend.rollback) == ["self", "name", "version"]
    for name in ("labelset", "embeddings", "tree"):
        assert _params(getattr(Client, name)) == ["self", "name"], name


def test_options_fields() -> None:
    assert [f for f in options.ClassifyOptions.__dataclass_fields__] == [
        "k",
        "mode",
        "rank",
        "beam",
        "within",
        "min_confidence",
        "activation",
        "fast_decode",
        "reject_below",
    ]
    result_fields = list(results.ClassificationResult.__dataclass_fields__)
    assert result_fields[:5] == ["image", "labelset", "version", "predictions", "path"]
    assert list(results.Prediction.__dataclass_fields__) == ["label", "probability", "score"]
    assert list(results.PathStep.__dataclass_fields__) == ["rank", "label", "probability"]
    info_fields = list(results.LabelSetInfo.__dataclass_fields__)
    assert info_fields[:4] == ["name", "version", "num_labels", "model"]
    assert "unchanged" in info_fields  # a registration that stored nothing new says so
    assert "rollback_of" in info_fields  # the version a rollback serves again


def test_both_backends_implement_the_protocol() -> None:
    from zsindex.local import LocalBackend
    from zsindex.remote import HttpBackend

    for method in [m for m in vars(backend.Backend) if not m.startswith("_")]:
        proto = _params(getattr(backend.Backend, method))
        assert _params(getattr(LocalBackend, method)) == proto, ("local", method)
        assert _params(getattr(HttpBackend, method)) == proto, ("remote", method)
