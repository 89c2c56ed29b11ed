"""Load and bookkeeping for the replica tests: classify clients through the proxy, pollers on
each replica, a writer of label-set versions, and the checks on what they saw.

Every version a writer registers has its own label names (``s<swap>_<row>``) and its own random
matrix, so a response can be checked after the run against the version it names: its labels
must be that version's, and each score must be that version's cosine for the query row.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import pickle
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from deploy_cluster import Cluster, auth, import_body, unit_rows

SCORE_TOL = 1e-4  # float32 cosines computed here and on the server


@dataclass(frozen=True)
class Version:
    names: tuple[str, ...]
    rows: np.ndarray


def version_content(swap: int, seed: int = 0) -> Version:
    """The content of a swap: 5 or 6 rows (alternating), names that say which swap it was."""
    n = 5 + swap % 2
    return Version(tuple(f"s{swap}_{j}" for j in range(n)), unit_rows(n, seed * 100_003 + swap))


Result = tuple[int, tuple[str, ...], tuple[float, ...]]  # version, labels, scores


@dataclass
class Sample:
    client: int
    server: str  # who answered: X-Served-By through the proxy, the replica's name when direct
    results: list[Result]  # per query row


@dataclass
class Tally:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def add_failure(self, text: str) -> None:
        self.failed.append(text[:300])


def parse_results(body: list[dict[str, object]]) -> list[Result]:
    out = []
    for result in body:
        preds = result["predictions"]
        assert isinstance(preds, list)
        version = result["version"]
        assert isinstance(version, int)
        out.append(
            (
                version,
                tuple(str(p["label"]) for p in preds),
                tuple(float(p["score"]) for p in preds),
            )
        )
    return out


class ClassifyLoad:
    """``clients`` threads classifying ``labelset`` through ``url`` until :meth:`stop`, in a
    process of their own, so the GIL they hold never delays the pollers' clocks here.

    Every request must succeed: a transport error or a non-200 answer is a failure (the proxy
    is there to hide replicas coming and going). ``tally`` is filled in by :meth:`stop`.
    """

    def __init__(
        self, url: str, labelset: str, clients: int = 8, rows: int = 2, keep: bool = True
    ) -> None:
        self.queries = [unit_rows(rows, seed=10_000 + c) for c in range(clients)]
        self.tally = Tally()
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded test process
        self._stop = ctx.Event()
        self._count = ctx.Value("q", 0)
        fd, self._out = tempfile.mkstemp(prefix="zs-load-", suffix=".pickle")
        os.close(fd)
        self._proc = ctx.Process(
            target=_client_process,
            args=(url, labelset, self.queries, keep, self._out, self._stop, self._count),
            daemon=True,
        )

    def __enter__(self) -> ClassifyLoad:
        self._proc.start()
        deadline = time.monotonic() + 60
        while self.count() == 0:  # the clients are running before the test goes on
            assert self._proc.is_alive() and time.monotonic() < deadline, "load did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._proc.is_alive() and self._proc.exitcode is not None:
            return
        self._stop.set()
        self._proc.join(120)
        if self._proc.is_alive():
            self._proc.kill()
            raise AssertionError("the client process did not stop")
        with open(self._out, "rb") as f:
            self.tally = pickle.load(f)
        os.unlink(self._out)

    def count(self) -> int:
        """Requests answered so far (ok or failed)."""
        return int(self._count.value)


def _client_process(
    url: str,
    labelset: str,
    queries: list[np.ndarray],
    keep: bool,
    out: str,
    stop: Any,
    count: Any,
) -> None:
    tally = Tally()
    lock = threading.Lock()

    def loop(client: int) -> None:
        body = {"labelset": labelset, "k": 3, "embeddings": queries[client].tolist()}
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/classify", json=body)
                except httpx.HTTPError as exc:
                    with lock:
                        tally.add_failure(f"client {client}: {type(exc).__name__}: {exc}")
                    continue
                finally:
                    with count.get_lock():
                        count.value += 1
                with lock:
                    if r.status_code != 200:
                        tally.add_failure(f"client {client}: {r.status_code} {r.text}")
                        continue
                    tally.ok += 1
                    if keep:
                        server = r.headers.get("x-served-by", "?")
                        tally.samples.append(Sample(client, server, parse_results(r.json())))

    threads = [threading.Thread(target=loop, args=(c,)) for c in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(out, "wb") as f:
        pickle.dump(tally, f)


class Poller:
    """One thread per replica classifying directly on it: when each version was first served."""

    def __init__(self, urls: Sequence[str], labelset: str) -> None:
        self.urls, self.labelset = list(urls), labelset
        self.query = unit_rows(1, seed=777)
        self.first_seen: list[dict[int, float]] = [{} for _ in urls]
        self.sequence: list[list[int]] = [[] for _ in urls]  # versions in order seen (changes)
        self.samples: list[Sample] = []
        self.latencies: list[float] = []  # the resolution of first_seen: one request's time
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(len(urls))
        ]

    def __enter__(self) -> Poller:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def latest(self, i: int) -> int:
        with self._lock:
            seq = self.sequence[i]
            return seq[-1] if seq else -1

    def _loop(self, i: int) -> None:
        body = {"labelset": self.labelset, "k": 3, "embeddings": self.query.tolist()}
        with httpx.Client(base_url=self.urls[i], timeout=30) as http:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = http.post("/v1/classify", json=body)
                    now = time.monotonic()
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failed.append(f"replica {i}: {type(exc).__name__}")
                    continue
                if r.status_code != 200:
                    with self._lock:
                        self.failed.append(f"replica {i}: {r.status_code} {r.text[:200]}")
                    continue
                results = parse_results(r.json())
                with self._lock:
                    self.latencies.append(now - sent)
                    self.samples.append(Sample(i, f"direct{i}", results))
                    version = results[0][0]
                    self.first_seen[i].setdefault(version, now)
                    seq = self.sequence[i]
                    if not seq or seq[-1] != version:
                        seq.append(version)


class Writer:
    """Registers versions of one label set (``PUT .../embeddings``) and keeps what each was."""

    def __init__(self, labelset: str, seed: int = 0) -> None:
        self.labelset, self.seed = labelset, seed
        self.versions: dict[int, Version] = {}
        self.acked_at: dict[int, float] = {}
        self.swaps = 0

    def write(self, http: httpx.Client) -> int:
        content = version_content(self.swaps, self.seed)
        self.swaps += 1
        r = http.put(
            f"/v1/labelsets/{self.labelset}/embeddings",
            json=import_body(content.names, content.rows),
            headers=auth(),
        )
        assert r.status_code == 201, f"{r.status_code} {r.text[:300]}"
        version = int(r.json()["version"])
        self.acked_at[version] = time.monotonic()
        assert version not in self.versions, f"version {version} acknowledged twice"
        self.versions[version] = content
        return version


@dataclass
class Verdict:
    responses: int = 0
    mixed: list[str] = field(default_factory=list)  # one response naming two versions
    wrong: list[str] = field(default_factory=list)  # labels or scores not of the named version
    backwards: list[str] = field(default_factory=list)  # N then an older version, same replica


def verify(
    samples: Sequence[Sample], versions: dict[int, Version], queries: dict[int, np.ndarray]
) -> Verdict:
    """Check every response against the versions the writer registered.

    ``queries`` maps a sample's ``client`` to the query rows it sent. A version the writer did
    not register (the seed version of a test) is checked for names only when it is in
    ``versions``; anything else is ``wrong``.
    """
    verdict = Verdict(responses=len(samples))
    last: dict[tuple[int, str], int] = defaultdict(lambda: -1)
    for s in samples:
        names = {v for v, _, _ in s.results}
        if len(names) != 1:
            verdict.mixed.append(f"client {s.client} via {s.server}: versions {sorted(names)}")
        for row, (version, labels, scores) in enumerate(s.results):
            content = versions.get(version)
            if content is None:
                verdict.wrong.append(f"client {s.client}: version {version} was never registered")
                continue
            index = {n: j for j, n in enumerate(content.names)}
            if not set(labels) <= set(index):
                verdict.wrong.append(f"v{version} answered {labels}, not of {content.names}")
                continue
            expected = content.rows[[index[n] for n in labels]] @ queries[s.client][row]
            if not np.allclose(scores, expected, atol=SCORE_TOL):
                verdict.wrong.append(f"v{version}: scores {scores} != {expected.tolist()}")
        key = (s.client, s.server)
        newest = max(names)
        if newest < last[key]:
            verdict.backwards.append(f"client {s.client} via {s.server}: {last[key]} → {newest}")
        last[key] = max(last[key], newest)
    return verdict


def seed_labelset(url: str, name: str, seed: int = 0) -> Writer:
    """A label set's first version, written through ``url``; the writer knows its content."""
    writer = Writer(name, seed)
    with httpx.Client(base_url=url, timeout=60) as http:
        writer.write(http)
    return writer


class WriteLoop:
    """Writes through the proxy every ``period`` s: new versions of one label set (R2) or one
    new label set per write (R3). Keeps what was acknowledged and what failed."""

    def __init__(self, url: str, name: str, period: float, new_names: bool) -> None:
        self.url, self.name, self.period, self.new_names = url, name, period, new_names
        self.acked: dict[str, tuple[int, int]] = {}  # label set -> (version, swap of content)
        self.acks = 0
        self.failed: list[str] = []
        self.swap = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> WriteLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self._stop.wait(self.period):
                swap = self.swap
                self.swap += 1
                name = f"{self.name}{swap}" if self.new_names else self.name
                content = version_content(swap, seed=7)
                try:
                    r = http.put(
                        f"/v1/labelsets/{name}/embeddings",
                        json=import_body(content.names, content.rows),
                        headers=auth(),
                    )
                except httpx.HTTPError as exc:
                    self.failed.append(f"{name}: {type(exc).__name__}")
                    continue
                if r.status_code == 201:
                    self.acked[name] = (int(r.json()["version"]), swap)
                    self.acks += 1
                else:
                    self.failed.append(f"{name}: {r.status_code} {r.text[:200]}")


def lost_in_transit(failure: str) -> bool:
    """A failed write that the replica's death explains: the proxy's 502, or a dropped answer."""
    return ": 502 " in failure or failure.endswith(("RemoteProtocolError", "ReadError"))


def check_acknowledged(cluster: Cluster, writes: WriteLoop) -> None:
    """Every acknowledged write is there, complete, on every replica (the last acknowledged
    version is the current one where all writes go to one label set)."""
    assert writes.acked
    for replica in cluster.replicas:
        with httpx.Client(base_url=replica.url, timeout=30) as http:
            for name, (version, swap) in writes.acked.items():
                info = http.get(f"/v1/labelsets/{name}")
                assert info.status_code == 200, f"{replica.name} lost {name}: {info.text}"
                assert info.json()["version"] == version
                emb = http.get(f"/v1/labelsets/{name}/embeddings").json()
                content = version_content(swap, seed=7)
                assert tuple(emb["names"]) == content.names
                got = np.frombuffer(base64.b64decode(emb["data"]), dtype="<f4")
                assert np.allclose(got.reshape(emb["shape"]), content.rows, atol=1e-6)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
