"""One image, one answer: every entry point classifies an image exactly as plain open_clip does.

DESIGN.md §4: image preprocessing is the model's own open_clip preprocess, after EXIF orientation
is applied and the image is converted to RGB with alpha composited on white, on every entry
point; probability = softmax of ``logit_scale`` × cosine over all labels. JPEG draft mode is an
explicit option (``--fast-decode`` / ``fast_decode=True`` / the multipart field ``fast_decode``)
with one meaning everywhere.

A deterministic corpus (``one_answer_corpus``: JPEGs at qualities 30/75/95 and 110-1024 px, mostly
large enough for draft mode to kick in, progressive and 4:4:4 JPEGs, EXIF orientations 6 and 8,
RGB / RGBA / palette-with-transparency / grey+alpha PNGs) is classified (k=5) against one label
set of the 48 colour+shape labels of ``zsindex-tiny``, registered once in a SQLite store, through

* ``cli``: ``zsindex classify FILES... --labels NAME -k 5 --json``, a real subprocess;
* ``local``: ``zsindex.Client.local(...)`` on the same store, paths as input;
* ``http``: ``POST /v1/classify`` (multipart, httpx) to a real ``zsindex serve`` subprocess on
  127.0.0.1;
* ``remote``: ``zsindex.Client("http://127.0.0.1:PORT")`` to the same server.

The entry points must agree with one another (same top-5 labels, probabilities and scores within
1e-6) and with a reference written with open_clip, Pillow and numpy only (labels identical,
probabilities within 1e-4); ``zsindex eval`` on an ImageFolder copy must report the accuracy the
reference predicts. Large JPEGs move probabilities by 1e-4 to 3e-2 under draft mode, but seldom
change a top-1, so the corpus also holds "knife-edge" images, found at run time with the
reference alone: two-colour mixtures whose exact decode and draft decode have different top-1
labels by a clear margin (≥ 1e-3 in probability, typically 0.1). An entry point (or ``eval``)
that decodes in draft mode gets their top-1, and so the accuracy, wrong.

The fast-decode spellings must agree with one another across entry points at 1e-6 and equal
open_clip on draft-decoded JPEGs (PIL ``draft("RGB", (S, S))``, S the model's input size) at
1e-4, leaving images draft mode cannot shrink at their exact answers.

One store, one server and one reference per module; loopback only; nothing is skipped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from one_answer_corpus import BLEND_PAIRS, ITEMS, LABELS, TEMPLATES, Item, blend, build, write
from PIL import Image, ImageOps

NAME = "one-answer"
K = 5
SAME = 1e-6  # between zsindex's own entry points: the same numbers
CLOSE = 1e-4  # zsindex against the plain open_clip reference
ZSINDEX_BIN = Path(sys.executable).parent / "zsindex"  # .venv/bin/zsindex
if not ZSINDEX_BIN.exists():  # a Python outside the virtualenv: the zsindex on PATH
    ZSINDEX_BIN = Path(shutil.which("zsindex") or ZSINDEX_BIN)


def _tiny_model_dir() -> Path:
    import zsindex

    return Path(zsindex.__file__).resolve().parent / "models" / "zsindex-tiny"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# One answer per image: [(label, probability, score), ...] best first, keyed by file name.
Answer = list[tuple[str, float, float]]
Answers = dict[str, Answer]


def _from_dicts(objs: list[dict[str, Any]]) -> Answers:
    out: Answers = {}
    for obj in objs:
        preds = [
            (p["label"], float(p["probability"]), float(p["score"])) for p in obj["predictions"]
        ]
        out[Path(obj["image"]).name] = preds
    return out


def _from_results(results: list[Any]) -> Answers:
    return {
        Path(r.image).name: [(p.label, float(p.probability), float(p.score)) for p in r.predictions]
        for r in results
    }


# -- the reference: open_clip + Pillow, no zsindex code ------------------------------------------


def reference_rgb(path: Path, draft: int | None = None) -> Image.Image:
    """EXIF orientation applied, RGB with alpha composited on white (optionally JPEG draft)."""
    with Image.open(path) as im:
        if draft is not None and im.format == "JPEG":
            im.draft("RGB", (draft, draft))
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        im = ImageOps.exif_transpose(im)
        if has_alpha:
            rgba = im.convert("RGBA")
            white = Image.new("RGB", rgba.size, (255, 255, 255))
            white.paste(rgba, mask=rgba.getchannel("A"))
            return white
        return im.convert("RGB")


@dataclass
class Reference:
    """Full softmax over every label per image, and the top-5 answer derived from it."""

    names: list[str]
    probs: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]

    def answers(self, k: int = K) -> Answers:
        out: Answers = {}
        for image, p in self.probs.items():
            order = np.argsort(-p, kind="stable")[:k]
            out[image] = [(self.names[i], float(p[i]), float(self.scores[image][i])) for i in order]
        return out


class OpenClipReference:
    """``zsindex-tiny`` loaded by plain open_clip; classifies files against a stored matrix."""

    def __init__(self, names: list[str], matrix: np.ndarray) -> None:
        import open_clip

        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            "local-dir:" + str(_tiny_model_dir())
        )
        self.model.eval()
        size = self.preprocess.transforms[0].size  # Resize(size) of the model's eval transform
        self.input_size = size if isinstance(size, int) else min(size)
        self.names = list(names)
        self.matrix = np.asarray(matrix, dtype=np.float64)

    def __call__(self, paths: dict[str, Path], draft: bool = False) -> Reference:
        return self.classify([(name, path, draft) for name, path in paths.items()])

    def classify(self, rows: list[tuple[str, Path, bool]]) -> Reference:
        """``rows``: (key, file, decode in JPEG draft mode?), classified in one batch."""
        import torch

        batch = torch.stack(
            [
                self.preprocess(reference_rgb(path, self.input_size if draft else None))
                for _, path, draft in rows
            ]
        )
        with torch.no_grad():
            emb = self.model.encode_image(batch).float()
            emb = emb / emb.norm(dim=-1, keepdim=True)
            scale = float(self.model.logit_scale.exp())
            bias = getattr(self.model, "logit_bias", None)
            bias_value = float(bias) if bias is not None else 0.0
        cos = emb.numpy().astype(np.float64) @ self.matrix.T
        logits = scale * cos + bias_value
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return Reference(
            names=self.names,
            probs={row[0]: probs[i] for i, row in enumerate(rows)},
            scores={row[0]: cos[i] for i, row in enumerate(rows)},
        )


# -- comparing answers -------------------------------------------------------------------------


def differences(got: Answers, want: Answers, tol: float, *, scores: bool = True) -> list[str]:
    """One line per image whose top-k labels differ or whose numbers are further than ``tol``."""
    lines = []
    for image in sorted(set(got) | set(want)):
        if image not in got or image not in want:
            lines.append(f"{image}: {'missing' if image not in got else 'unexpected'}")
            continue
        a, b = got[image], want[image]
        labels_a, labels_b = [x[0] for x in a], [x[0] for x in b]
        dp = max((abs(x[1] - y[1]) for x, y in zip(a, b, strict=False)), default=0.0)
        ds = max((abs(x[2] - y[2]) for x, y in zip(a, b, strict=False)), default=0.0)
        if labels_a != labels_b or len(a) != len(b) or dp > tol or (scores and ds > tol):
            lines.append(
                f"{image}: max|Δp|={dp:.3g} max|Δscore|={ds:.3g}\n"
                f"    got  {[(x[0], round(x[1], 6)) for x in a]}\n"
                f"    want {[(y[0], round(y[1], 6)) for y in b]}"
            )
    return lines


def assert_same(got: Answers, want: Answers, tol: float, what: str, **kw: Any) -> None:
    diff = differences(got, want, tol, **kw)
    assert not diff, f"{what}: {len(diff)} of {len(want)} image(s) differ\n" + "\n".join(diff)


# -- the world: corpus, store, server ------------------------------------------------------------


def _clean_env(home: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        ZSINDEX_HOME=str(home),
        ZSINDEX_DATABASE_URL=db_url,
        ZSINDEX_DEVICE="cpu",
        ZSINDEX_MODEL="zsindex-tiny",
    )
    return env


class Server:
    """``zsindex serve`` as a subprocess on a free loopback port (started early, awaited late)."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.log = root / "serve.log"
        port = _free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(ZSINDEX_BIN), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        self.ready = False

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> str:
        """The base URL once ``/healthz`` and ``/readyz`` answer 200."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while not self.ready and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"zsindex serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                health = httpx.get(f"{self.base_url}/healthz", timeout=2)
                ready = httpx.get(f"{self.base_url}/readyz", timeout=2)
                if health.status_code == 200 and ready.status_code == 200:
                    self.ready = True
                    break
                last = f"/healthz {health.status_code}, /readyz {ready.status_code}: {ready.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        if not self.ready:
            pytest.fail(f"zsindex serve not ready after {timeout} s ({last}):\n{self.tail()}")
        return self.base_url

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class World:
    """The corpus (file name → path, and its true labels), the store, the server, the clients."""

    root: Path
    env: dict[str, str]
    paths: dict[str, Path]
    truth: dict[str, str]
    local: Any
    server: Server | None = None
    remote: Any = None
    knife_edge: dict[str, tuple[float, float]] = field(default_factory=dict)
    cache: dict[str, Answers] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return [str(p) for p in self.paths.values()]

    def base_url(self) -> str:
        assert self.server is not None
        return self.server.wait_ready()

    def remote_client(self) -> Any:
        if self.remote is None:
            from zsindex import Client

            self.remote = Client(self.base_url(), timeout=120.0)
        return self.remote

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ZSINDEX_BIN), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.root,
        )


@pytest.fixture(scope="module")
def base_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Corpus written, label set registered once (SQLite, ``zsindex-tiny``), server started."""
    from zsindex import Client
    from zsindex.config import Settings

    root = tmp_path_factory.mktemp("one_answer")
    paths = build(root / "corpus")
    env = _clean_env(root / "home", f"sqlite:///{root / 'store.sqlite3'}")
    local = Client.local(settings=Settings.from_env(env))
    w = World(root, env, paths, {item.name: item.label for item in ITEMS}, local)
    try:
        local.add_labelset(NAME, list(LABELS), templates=list(TEMPLATES), model="zsindex-tiny")
        w.server = Server(env, root)
        yield w
    finally:
        if w.server is not None:
            w.server.stop()
        if w.remote is not None:
            w.remote.close()
        local.close()


@pytest.fixture(scope="module")
def stored(base_world: World) -> tuple[list[str], np.ndarray]:
    """The label set's names and matrix as ``Client.local().embeddings`` gives them."""
    names, matrix = base_world.local.embeddings(NAME)
    assert list(names) == list(LABELS), "embeddings() rows are not in registration order"
    matrix = np.asarray(matrix)
    assert matrix.dtype == np.float32 and matrix.shape == (len(LABELS), matrix.shape[1])
    return list(names), matrix


@pytest.fixture(scope="module")
def open_clip_ref(stored: tuple[list[str], np.ndarray]) -> OpenClipReference:
    return OpenClipReference(*stored)


def find_knife_edge(
    ref: OpenClipReference, folder: Path, pair: int, rounds: int = 10
) -> tuple[Item, Path, str, tuple[float, float]] | None:
    """Along one colour blend, an image whose exact decode and draft decode have different
    top-1 labels, each by a clear margin; found with the reference alone.

    With g(t) = score(first colour's label) - score(second's) at mixture fraction t, it finds
    by false position (Illinois) the t where g_exact(t) + g_draft(t) = 0: there the two decodes
    sit on opposite sides of the colour change, equally far. Returns (item, path, the exact
    decode's top-1, (exact margin, draft margin) in probability) or ``None``.
    """
    a, b, shape = BLEND_PAIRS[pair]
    ia, ib = ref.names.index(f"{a} {shape}"), ref.names.index(f"{b} {shape}")
    folder.mkdir(parents=True, exist_ok=True)
    best: tuple[Item, Path, str, tuple[float, float]] | None = None

    def h(fraction: float) -> float:
        nonlocal best
        item = blend(pair, fraction)
        path = write(item, folder)
        both = ref.classify([("e", path, False), ("d", path, True)])
        pe, pd = both.probs["e"], both.probs["d"]
        te, td = int(np.argmax(pe)), int(np.argmax(pd))
        if te != td:
            margins = (float(pe[te] - pe[td]), float(pd[td] - pd[te]))
            if best is None or min(margins) > min(best[3]):
                best = (item, path, ref.names[te], margins)
        se, sd = both.scores["e"], both.scores["d"]
        return float(se[ia] - se[ib] + sd[ia] - sd[ib])

    lo, hi = 0.0, 1.0
    h_lo, h_hi = h(lo), h(hi)
    if not h_lo > 0 > h_hi:
        return None
    side = 0
    for _ in range(rounds):
        mid = (lo * h_hi - hi * h_lo) / (h_hi - h_lo)
        h_mid = h(mid)
        if best is not None and min(best[3]) > 0.4 * max(best[3]):
            break  # both decodes clearly on their own side
        if h_mid > 0:
            lo, h_lo = mid, h_mid
            if side == 1:
                h_hi /= 2
            side = 1
        else:
            hi, h_hi = mid, h_mid
            if side == -1:
                h_lo /= 2
            side = -1
    return best


@pytest.fixture(scope="module")
def world(base_world: World, open_clip_ref: OpenClipReference) -> World:
    """The corpus plus, per colour blend, a knife-edge image (true class: the exact decode's
    top-1) that an entry point decoding in draft mode gets wrong."""
    if not base_world.knife_edge:
        for pair in range(len(BLEND_PAIRS)):
            found = find_knife_edge(open_clip_ref, base_world.root / "blends", pair)
            if found is not None and min(found[3]) >= 1e-3:
                item, path, label, margins = found
                base_world.paths[item.name] = path
                base_world.truth[item.name] = label
                base_world.knife_edge[item.name] = margins
        assert base_world.knife_edge, "no blend separates exact from draft decoding"
    return base_world


@pytest.fixture(scope="module")
def reference(world: World, open_clip_ref: OpenClipReference) -> Reference:
    return open_clip_ref(world.paths)


@pytest.fixture(scope="module")
def draft_reference(world: World, open_clip_ref: OpenClipReference) -> Reference:
    return open_clip_ref(world.paths, draft=True)


# -- the four entry points, each run once per module and option --------------------------------


def run_cli(world: World, fast: bool = False) -> Answers:
    key = f"cli:{fast}"
    if key not in world.cache:
        extra = ["--fast-decode"] if fast else []
        proc = world.cli("classify", *world.files, "--labels", NAME, "-k", str(K), "--json", *extra)
        assert proc.returncode == 0, f"zsindex classify exited {proc.returncode}:\n{proc.stderr}"
        world.cache[key] = _from_dicts(json.loads(proc.stdout))
    return world.cache[key]


def run_local(world: World, fast: bool = False) -> Answers:
    key = f"local:{fast}"
    if key not in world.cache:
        kwargs = {"fast_decode": True} if fast else {}
        results = world.local.classify(world.files, labelset=NAME, k=K, **kwargs)
        world.cache[key] = _from_results(results)
    return world.cache[key]


def run_http(world: World, fast: bool = False) -> Answers:
    key = f"http:{fast}"
    if key not in world.cache:
        files = [
            ("images", (path.name, path.read_bytes(), "application/octet-stream"))
            for path in world.paths.values()
        ]
        data = {"labelset": NAME, "k": str(K)}
        if fast:
            data["fast_decode"] = "true"
        r = httpx.post(f"{world.base_url()}/v1/classify", data=data, files=files, timeout=120)
        assert r.status_code == 200, f"POST /v1/classify: {r.status_code} {r.text}"
        world.cache[key] = _from_dicts(r.json())
    return world.cache[key]


def run_remote(world: World, fast: bool = False) -> Answers:
    key = f"remote:{fast}"
    if key not in world.cache:
        kwargs = {"fast_decode": True} if fast else {}
        results = world.remote_client().classify(world.files, labelset=NAME, k=K, **kwargs)
        world.cache[key] = _from_results(results)
    return world.cache[key]


ENTRY_POINTS = {"cli": run_cli, "local": run_local, "http": run_http, "remote": run_remote}


# -- the tests -----------------------------------------------------------------------------------


def test_corpus_is_what_it_claims(world: World) -> None:
    """The corpus exercises what it is meant to (guards the fixture, not zsindex)."""
    seen = {}
    for name, path in world.paths.items():
        with Image.open(path) as im:
            seen[name] = (im.format, im.mode, im.size, im.getexif().get(0x0112), im.info)
    jpegs = [n for n, s in seen.items() if s[0] == "JPEG"]
    assert {item.quality for item in ITEMS if item.fmt == "JPEG"} >= {30, 75, 95}
    assert sum(min(seen[n][2]) >= 128 for n in jpegs) >= 8, "few JPEGs where draft mode kicks in"
    assert any(min(seen[n][2]) < 128 for n in jpegs), "no JPEG too small for draft mode"
    assert {s[3] for s in seen.values()} >= {6, 8}, "EXIF orientations 6 and 8 missing"
    assert any(s[1] == "RGBA" for s in seen.values())
    assert any(s[1] == "P" and "transparency" in s[4] for s in seen.values())
    assert any(s[2][0] != s[2][1] for s in seen.values()), "no non-square image"
    assert world.knife_edge, "no knife-edge image"


def test_reference_is_sane(world: World, reference: Reference) -> None:
    """The tiny model gets most of the corpus right, so the comparisons are not vacuous."""
    answers = reference.answers()
    top1 = [answers[item.name][0][0] == item.label for item in ITEMS]
    assert sum(top1) >= len(ITEMS) * 0.7, answers
    # the predictions are not one-hot: there is probability mass below the top-1 to compare
    assert max(1.0 - a[0][1] for a in answers.values()) > 1e-3


@pytest.mark.parametrize("entry", ["cli", "http", "remote"])
def test_entry_points_give_one_answer(world: World, entry: str) -> None:
    """Each entry point equals ``Client.local`` (top-5 labels; probabilities, scores ≤ 1e-6)."""
    assert_same(ENTRY_POINTS[entry](world), run_local(world), SAME, f"{entry} vs local")


@pytest.mark.parametrize("entry", ["cli", "local", "http", "remote"])
def test_entry_point_matches_open_clip(world: World, reference: Reference, entry: str) -> None:
    """Each entry point equals plain open_clip (labels identical, probabilities ≤ 1e-4)."""
    assert_same(ENTRY_POINTS[entry](world), reference.answers(), CLOSE, f"{entry} vs open_clip")


def test_eval_matches_reference(world: World, reference: Reference) -> None:
    """``zsindex eval`` on an ImageFolder copy of the corpus (sub-folders named after the true
    labels; knife-edge images under the exact decode's top-1) reports the reference's accuracy."""
    folder = world.root / "imagefolder"
    if not folder.exists():
        for name, label in world.truth.items():
            (folder / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(world.paths[name], folder / label / name)
    proc = world.cli("eval", str(folder), "--labels", NAME, "--json")
    assert proc.returncode == 0, f"zsindex eval exited {proc.returncode}:\n{proc.stderr}"
    report = json.loads(proc.stdout)

    index = {name: i for i, name in enumerate(reference.names)}
    order = list(world.truth)
    ranked = {n: np.argsort(-reference.probs[n], kind="stable")[:5] for n in order}
    top1 = np.array([int(ranked[n][0]) == index[world.truth[n]] for n in order])
    top5 = np.array([index[world.truth[n]] in ranked[n] for n in order])
    labels = [world.truth[n] for n in order]
    recalls = [float(top1[[t == c for t in labels]].mean()) for c in sorted(set(labels))]
    want = {
        "n": len(order),
        "top1": float(top1.mean()),
        "top5": float(top5.mean()),
        "mean_per_class_recall": float(np.mean(recalls)),
    }
    misses = [n for n, ok in zip(order, top1, strict=True) if not ok]
    got = {key: report.get(key) for key in want}
    assert got["n"] == want["n"], (got, want)
    for key in ("top1", "top5", "mean_per_class_recall"):
        assert got[key] is not None and math.isclose(got[key], want[key], abs_tol=1e-9), (
            f"eval {key}: got {got[key]}, the reference gives {want[key]} over {len(order)} "
            f"images (the reference's top-1 misses: {misses}; knife-edge images and their "
            f"(exact, draft) top-1 margins: {world.knife_edge})"
        )
    if "nll" in report:  # DESIGN §3 lists nll: when eval reports it, it is the reference's
        p_true = [reference.probs[n][index[world.truth[n]]] for n in order]
        nll = float(np.mean(-np.log(p_true)))
        assert math.isclose(float(report["nll"]), nll, abs_tol=CLOSE), (report["nll"], nll)


@pytest.mark.parametrize("entry", ["cli", "http", "remote"])
def test_fast_decode_gives_one_answer(world: World, entry: str) -> None:
    """``--fast-decode`` / ``fast_decode=True`` / ``fast_decode=true`` mean the same everywhere."""
    assert_same(
        ENTRY_POINTS[entry](world, fast=True),
        run_local(world, fast=True),
        SAME,
        f"{entry} vs local, fast decode",
    )


def test_fast_decode_is_jpeg_draft_mode(
    world: World, reference: Reference, draft_reference: Reference
) -> None:
    """Fast decode is JPEG draft mode at the model's input size and nothing else: the answers
    equal open_clip's on draft-decoded JPEGs, and images draft mode cannot shrink (PNGs, JPEGs
    under twice the input size) keep their exact answers."""
    fast = run_local(world, fast=True)
    assert_same(fast, draft_reference.answers(), CLOSE, "fast decode vs open_clip on draft JPEGs")
    exact = reference.answers()
    unshrinkable = {item.name for item in ITEMS if item.fmt != "JPEG" or min(item.size) < 128}
    assert_same(
        {n: fast[n] for n in unshrinkable},
        {n: exact[n] for n in unshrinkable},
        CLOSE,
        "fast decode on images draft mode cannot shrink",
    )
