"""Every ``Client`` method against both back ends: equal results and equal exception types.

The local client and a live ``zsindex serve`` (uvicorn on loopback, the real app and
``LocalBackend``) share one SQLite store. Each case runs once through ``Client.local()`` and
once through the remote ``Client``; writes go to a name of each back end's own, reads to shared
label sets. The outcomes — results with names and timestamps taken out, or the exception's class
— must be equal.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
from adapt_cases import LABELS as TEAM_LABELS  # tests/ is not a package
from adapt_cases import team_pngs
from PIL import Image

from zsindex import Client
from zsindex.config import Settings
from zsindex.errors import InvalidInputError, NotFoundError
from zsindex.results import ClassificationResult, LabelSetInfo, LabelTree

TINY = "zsindex-tiny"
DIM = 128
KEY = "parity-key"
TREE_LABELS = ["circle", "square", "red circle", "blue circle", "red square"]
TREE_PARENTS = {"red circle": "circle", "blue circle": "circle", "red square": "square"}


def _png(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _unit(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Client]]:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.server import BackgroundServer

    home = tmp_path_factory.mktemp("parity")
    settings = Settings(home=home, device="cpu", model=TINY, pretrained=None, api_keys=(KEY,))
    local = Client.local(settings=settings)
    local.add_labelset("shared", ["red", "green", "blue", "yellow"], model=TINY)
    local.add_labelset("shared_tree", TREE_LABELS, parents=TREE_PARENTS, model=TINY)
    local.add_labelset("shared_v", ["red", "green", "blue"], model=TINY)  # version 1
    local.add_labelset("shared_v", ["red", "green", "blue", "yellow", "white"], model=TINY)
    app = create_app(settings, LocalBackend(settings), refresh_interval_s=0.1)
    with BackgroundServer(app) as server:
        remote = Client(server.base_url, api_key=KEY)
        yield {"local": local, "remote": remote}
        remote.close()
    local.close()


def _plain(value: Any) -> Any:
    """A comparable form of a result: timestamps and per-back-end names taken out."""
    if isinstance(value, LabelSetInfo):
        out = asdict(value)
        out.pop("created_at")
        out.pop("name")
        return out
    if isinstance(value, ClassificationResult | LabelTree):
        return asdict(value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    return value


Case = Callable[[Client, str], Any]
"""``case(client, suffix)``: suffix names this back end's own label sets."""

EMB = _unit(3, 0)


# Three classes of a label set where zero-shot errs by construction (``adapt_cases``: labels
# named after shapes, classes defined by colour), so calibration has errors to fit. EXAMPLES,
# keyed by colour name, feed the error cases on ``shared`` (red, green, blue, yellow).
TEAM_EXAMPLES = {
    label: team_pngs(label, 4, i) for i, label in enumerate(["circle", "square", "star"])
}
EXAMPLES = {
    color: team_pngs(label, 4, 10 + i)
    for i, (color, label) in enumerate([("red", "circle"), ("green", "square"), ("yellow", "star")])
}


def _tune_case(c: Client, s: str) -> Any:
    c.add_labelset(f"tune{s}", TEAM_LABELS, model=TINY)
    tuned = c.tune_labelset(f"tune{s}", TEAM_EXAMPLES, alpha="auto")
    again = c.tune_labelset(f"tune{s}", TEAM_EXAMPLES, alpha=0.5)
    probe = TEAM_EXAMPLES["circle"][:2]
    results = c.classify(probe, labelset=f"tune{s}", k=4, reject_below=0.9)
    return tuned, again, [(r.version, r.predictions, r.rejected) for r in results]


def _calibrate_case(c: Client, s: str) -> Any:
    c.add_labelset(f"cal{s}", TEAM_LABELS, model=TINY)
    info = c.calibrate(f"cal{s}", TEAM_EXAMPLES, target_precision=0.8)
    results = c.classify(embeddings=EMB, labelset=f"cal{s}", k=4)
    return info, [(r.version, r.predictions) for r in results]


CASES: dict[str, Case] = {
    "add flat": lambda c, s: c.add_labelset(f"flat{s}", ["cat", "dog"], model=TINY),
    "add tree": lambda c, s: c.add_labelset(
        f"tree{s}", TREE_LABELS, parents=TREE_PARENTS, model=TINY
    ),
    "add with default model": lambda c, s: c.add_labelset(f"dflt{s}", ["a", "b"]),
    "add plugin": lambda c, s: c.add_labelset(f"plug{s}", plugin="shapes", model=TINY),
    "add content": lambda c, s: c.add_labelset(
        f"text{s}", content="red\nblue\n", format="text", model=TINY
    ),
    "add bad template": lambda c, s: c.add_labelset(
        f"bad{s}", ["a"], templates=["no placeholder"], model=TINY
    ),
    "add with an index": lambda c, s: c.add_labelset(
        f"idx{s}", ["cat", "dog"], model=TINY, index="hnsw16,fp16"
    ),
    "add with a bad index": lambda c, s: c.add_labelset(f"badi{s}", ["a"], index="kd-tree"),
    "import with an index": lambda c, s: c.import_labelset(
        f"impi{s}", _unit(3, 7), ["x", "y", "z"], model=TINY, index="ivf2"
    ),
    "add bad name": lambda c, s: c.add_labelset("bad/name", ["a"], model=TINY),
    "add no source": lambda c, s: c.add_labelset(f"none{s}", model=TINY),
    "import flat": lambda c, s: c.import_labelset(
        f"imp{s}", _unit(3, 1), ["x", "y", "z"], model=TINY
    ),
    "import without model": lambda c, s: c.import_labelset(f"impd{s}", _unit(2, 2), ["x", "y"]),
    "import tree by names": lambda c, s: c.import_labelset(
        f"impt{s}",
        _unit(3, 3),
        ["root", "left", "right"],
        parents=[None, "root", "root"],
        model=TINY,
    ),
    "import tree by rows": lambda c, s: c.import_labelset(
        f"impr{s}", _unit(3, 4), ["a", "a", "b"], parents=[None, 0, 0], model=TINY
    ),
    "import fp16 transposed": lambda c, s: c.import_labelset(
        f"imph{s}", _unit(4, 5).astype(np.float16).T, list("abcd"), model=TINY
    ),
    "import wrong width": lambda c, s: c.import_labelset(
        f"impw{s}", np.ones((2, 7), np.float32), ["a", "b"], model=TINY
    ),
    "labelset": lambda c, s: c.labelset("shared"),
    "labelset empty name": lambda c, s: c.labelset(""),
    "labelset missing": lambda c, s: c.labelset("missing"),
    "history": lambda c, s: c.history("shared"),
    "history missing": lambda c, s: c.history("missing"),
    "embeddings flat": lambda c, s: c.embeddings("shared"),
    "embeddings tree": lambda c, s: c.embeddings("shared_tree"),
    "tree": lambda c, s: c.tree("shared_tree"),
    "tree of a flat set": lambda c, s: c.tree("shared"),
    "delete missing": lambda c, s: c.delete_labelset("missing"),
    "delete own": lambda c, s: (
        c.add_labelset(f"del{s}", ["a"], model=TINY),
        c.delete_labelset(f"del{s}"),
    )[1],
    "classify bytes": lambda c, s: c.classify(
        [_png((250, 0, 0)), _png((0, 0, 250))], labelset="shared"
    ),
    "classify binary file": lambda c, s: c.classify(
        [io.BytesIO(_png((0, 250, 0)))], labelset="shared"
    ),
    "classify PIL": lambda c, s: c.classify(
        [Image.new("RGB", (30, 30), (250, 250, 0))], labelset="shared"
    ),
    "classify None": lambda c, s: c.classify([None], labelset="shared"),  # type: ignore[list-item]
    "classify int": lambda c, s: c.classify([2], labelset="shared"),  # type: ignore[list-item]
    "classify not an image": lambda c, s: c.classify([b"hello world"], labelset="shared"),
    "classify report errors": lambda c, s: c.classify(
        [_png((250, 0, 0)), b"\x89PNG\r\n\x1a\n broken"], labelset="shared", on_error="report"
    ),
    "classify 70 images": lambda c, s: c.classify(
        [_png((i * 3, 100, 200 - i)) for i in range(70)], labelset="shared", k=2
    ),
    "classify 5000 embeddings": lambda c, s: c.classify(
        embeddings=_unit(5000, 6), labelset="shared", k=1
    ),
    "classify embeddings": lambda c, s: c.classify(embeddings=EMB, labelset="shared", k=4),
    "classify wrong width": lambda c, s: c.classify(
        embeddings=np.ones((1, 5), np.float32), labelset="shared"
    ),
    "classify missing set": lambda c, s: c.classify(embeddings=EMB, labelset="missing"),
    "classify empty set name": lambda c, s: c.classify(embeddings=EMB, labelset=""),
    "beam 5000": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared_tree", mode="beam", beam=5000, k=2
    ),
    "marginal at rank 1": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared_tree", mode="marginal", rank=1
    ),
    "within": lambda c, s: c.classify(embeddings=EMB, labelset="shared_tree", within="circle"),
    "pruned on a tree": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared_tree", mode="pruned"
    ),
    "pruned on a flat set": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared", mode="pruned"
    ),
    "within unknown": lambda c, s: c.classify(embeddings=EMB, labelset="shared_tree", within="x"),
    "tree mode on a flat set": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared", mode="beam"
    ),
    "sigmoid": lambda c, s: c.classify(embeddings=EMB, labelset="shared", activation="sigmoid"),
    "k too large": lambda c, s: c.classify(embeddings=EMB, labelset="shared", k=10_001),
    "fast decode": lambda c, s: c.classify(
        [_png((250, 0, 0), (600, 500))], labelset="shared", fast_decode=True
    ),
    # Version pinning (NAME@N) and rollback.
    "labelset pinned": lambda c, s: c.labelset("shared_v@1"),
    "labelset pinned missing version": lambda c, s: c.labelset("shared_v@9"),
    "labelset pinned bad version": lambda c, s: c.labelset("shared_v@x"),
    "labelset pinned missing set": lambda c, s: c.labelset("missing@1"),
    "embeddings pinned": lambda c, s: c.embeddings("shared_v@1"),
    "tree pinned": lambda c, s: c.tree("shared_v@1"),
    "classify pinned embeddings": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared_v@1", k=4
    ),
    "classify pinned images": lambda c, s: c.classify(
        [_png((250, 0, 0)), _png((0, 0, 250))], labelset="shared_v@1", k=5
    ),
    "classify pinned current": lambda c, s: c.classify(embeddings=EMB, labelset="shared_v@2"),
    "classify pinned unreadable image": lambda c, s: c.classify(
        [b"hello world"], labelset="shared_v@1", on_error="report"
    ),
    "classify pinned missing version": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared_v@3"
    ),
    "classify pinned bad version": lambda c, s: c.classify(embeddings=EMB, labelset="shared_v@"),
    "classify pinned long name": lambda c, s: c.classify(
        embeddings=EMB, labelset="a" * 64 + "@1234567890"
    ),
    "history pinned": lambda c, s: c.history("shared_v@1"),
    "rollback": lambda c, s: (
        c.add_labelset(f"rb{s}", ["cat", "dog"], model=TINY),
        c.add_labelset(f"rb{s}", ["cat", "dog", "cow"], model=TINY),
        c.rollback(f"rb{s}", 1),
        c.history(f"rb{s}"),
        [(r.version, r.predictions) for r in c.classify(embeddings=EMB, labelset=f"rb{s}", k=3)],
        [(r.version, r.predictions) for r in c.classify(embeddings=EMB, labelset=f"rb{s}@2")],
    ),
    "rollback to the current content": lambda c, s: (
        c.add_labelset(f"rbu{s}", ["cat", "dog"], model=TINY),
        c.rollback(f"rbu{s}", 1),
    ),
    "rollback missing version": lambda c, s: c.rollback("shared_v", 7),
    "rollback missing set": lambda c, s: c.rollback("missing", 1),
    "rollback bad name": lambda c, s: c.rollback("bad/name", 1),
    "rollback version 0": lambda c, s: c.rollback("shared_v", 0),
    "rollback version as text": lambda c, s: c.rollback("shared_v", "1"),  # type: ignore[arg-type]
    # Few-shot, calibration and "none of these" (issue 18).
    "tune": _tune_case,
    "calibrate": _calibrate_case,
    "tune unknown label": lambda c, s: c.tune_labelset(
        "shared", {"red": EXAMPLES["red"], "mauve": EXAMPLES["green"]}
    ),
    "tune alpha out of range": lambda c, s: c.tune_labelset("shared", EXAMPLES, alpha=1.5),
    "tune one label": lambda c, s: c.tune_labelset("shared", {"red": EXAMPLES["red"]}),
    "tune unreadable image": lambda c, s: c.tune_labelset(
        "shared", {"red": [b"not an image"], "green": EXAMPLES["green"]}
    ),
    "tune missing set": lambda c, s: c.tune_labelset("missing", EXAMPLES),
    "calibrate too few": lambda c, s: c.calibrate(
        "shared", {k: v[:1] for k, v in EXAMPLES.items()}
    ),
    "reject below flat": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared", reject_below=0.5
    ),
    "reject below images": lambda c, s: c.classify(
        EXAMPLES["yellow"], labelset="shared", reject_below=0.9
    ),
    "reject below beam": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared_tree", mode="beam", reject_below=0.6
    ),
    "reject below marginal": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared_tree", mode="marginal", rank=1, reject_below=0.6
    ),
    "reject below out of range": lambda c, s: c.classify(
        embeddings=EMB, labelset="shared", reject_below=2.0
    ),
}

ADAPT_EXPECTED = {
    "tune": "ok",
    "calibrate": "ok",
    "tune unknown label": "InvalidInputError",
    "tune alpha out of range": "InvalidInputError",
    "tune one label": "InvalidInputError",
    "tune unreadable image": "UnsupportedImageFormatError",
    "tune missing set": "NotFoundError",
    "calibrate too few": "InvalidInputError",
    "reject below flat": "ok",
    "reject below images": "ok",
    "reject below beam": "ok",
    "reject below marginal": "ok",
    "reject below out of range": "InvalidInputError",
}


PINNING_EXPECTED = {
    "labelset pinned": "ok",
    "labelset pinned missing version": "NotFoundError",
    "labelset pinned bad version": "InvalidInputError",
    "labelset pinned missing set": "NotFoundError",
    "embeddings pinned": "ok",
    "tree pinned": "ok",
    "classify pinned embeddings": "ok",
    "classify pinned images": "ok",
    "classify pinned current": "ok",
    "classify pinned unreadable image": "ok",
    "classify pinned missing version": "NotFoundError",
    "classify pinned bad version": "InvalidInputError",
    "classify pinned long name": "NotFoundError",
    "history pinned": "NotFoundError",
    "rollback": "ok",
    "rollback to the current content": "ok",
    "rollback missing version": "NotFoundError",
    "rollback missing set": "NotFoundError",
    "rollback bad name": "NotFoundError",
    "rollback version 0": "InvalidInputError",
    "rollback version as text": "InvalidInputError",
}
"""What the pinning cases must give, not only agree on (an error of the same class on both
sides, as before the feature, would agree too)."""


def _outcome(case: Case, client: Client, suffix: str) -> Any:
    try:
        return ("ok", _plain(case(client, suffix)))
    except Exception as exc:  # the class is what must agree
        return ("error", type(exc).__name__)


@pytest.mark.parametrize("name", list(CASES))
def test_local_and_remote_agree(clients: dict[str, Client], name: str) -> None:
    case = CASES[name]
    local = _outcome(case, clients["local"], "_l")
    remote = _outcome(case, clients["remote"], "_r")
    assert local == remote
    if name in PINNING_EXPECTED:
        assert (local[0] if local[0] == "ok" else local[1]) == PINNING_EXPECTED[name], local
    if name in ADAPT_EXPECTED:
        assert (local[0] if local[0] == "ok" else local[1]) == ADAPT_EXPECTED[name], local


def test_reject_below_marks_results_and_keeps_predictions(clients: dict[str, Client]) -> None:
    for client in clients.values():
        plain = client.classify(embeddings=EMB, labelset="shared", k=4)
        marked = client.classify(embeddings=EMB, labelset="shared", k=4, reject_below=0.5)
        assert not any(r.rejected for r in plain)
        for p, m in zip(plain, marked, strict=True):
            assert m.predictions == p.predictions
            assert m.rejected is (p.predictions[0].probability < 0.5)
        tree = client.classify(embeddings=EMB, labelset="shared_tree", mode="beam", reject_below=1)
        assert all(r.rejected for r in tree if r.predictions[0].probability < 1)
        assert all(r.to_dict()["rejected"] in (True, False) for r in plain + marked)


def test_labelsets_agree(clients: dict[str, Client]) -> None:
    local = [i.name for i in clients["local"].labelsets()]
    remote = [i.name for i in clients["remote"].labelsets()]
    assert local == remote and "shared" in local


def test_every_client_method_is_covered() -> None:
    methods = {
        n
        for n in dir(Client)
        if not n.startswith("_") and callable(getattr(Client, n)) and n not in ("close", "local")
    }
    methods -= {"from_backend"}  # constructors
    covered = {
        "add_labelset",
        "import_labelset",
        "labelset",
        "labelsets",
        "history",
        "embeddings",
        "tree",
        "delete_labelset",
        "classify",
        "rollback",
        "tune_labelset",
        "calibrate",
    }
    assert methods == covered, methods ^ covered


def test_both_backends_raise_the_same_for_bad_options(clients: dict[str, Client]) -> None:
    for client in clients.values():
        with pytest.raises(InvalidInputError):
            client.classify(embeddings=EMB, labelset="shared", mode="nope")  # type: ignore[arg-type]


def test_pinning_errors_say_the_same(clients: dict[str, Client]) -> None:
    """Not only the class: the one line a user reads names the set, the version and the way on."""
    calls: dict[str, Callable[[Client], Any]] = {
        "missing version": lambda c: c.classify(embeddings=EMB, labelset="shared_v@9"),
        "bad version": lambda c: c.classify(embeddings=EMB, labelset="shared_v@x"),
        "show missing version": lambda c: c.labelset("shared_v@9"),
        "rollback missing version": lambda c: c.rollback("shared_v", 9),
    }
    for name, call in calls.items():
        messages = []
        for client in clients.values():
            with pytest.raises((NotFoundError, InvalidInputError)) as caught:
                call(client)
            messages.append(str(caught.value))
        assert messages[0] == messages[1], name
    assert (
        "label set 'shared_v' has no version 9 (see `zsindex labels history shared_v`)"
        in (messages[0])
    )


def test_pinned_results_name_the_pinned_version(clients: dict[str, Client]) -> None:
    for client in clients.values():
        [one] = client.classify(embeddings=EMB[:1], labelset="shared_v@1", k=5)
        assert (one.labelset, one.version) == ("shared_v", 1)
        assert {p.label for p in one.predictions} == {"red", "green", "blue"}
        assert client.labelset("shared_v").version == 2  # pinning changes nothing current
