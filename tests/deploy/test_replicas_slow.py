"""The long replica loops (``make test-slow``): 3 replicas on one PostgreSQL behind HAProxy
(``deploy/haproxy.cfg``), 8 clients classifying through the proxy throughout.

- rolling restarts of all 3 replicas, ROLLS rounds: 0 failed requests, reads and writes;
- KILLS SIGKILLs (a different replica each time, restarted after): 0 failed classify, every
  acknowledged write present and complete on every replica;
- >= 1,000 version swaps written through the proxy (so across the replicas): 0 partial versions
  (labels or scores not of the version named), 0 mixed responses, 0 5xx, never backwards;
- R4: PostgreSQL restarted under the running replicas: /readyz says store_unavailable during
  the outage; afterwards every replica is ready again without a restart (same process), and a
  change made right after the restart reaches all 3 while polling is slowed to once a minute,
  so only a re-established LISTEN (or the resync that follows it) can have delivered it.

Run with ``-s`` to see the counts (recorded in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_cluster import Cluster, auth, import_body, unit_rows
from deploy_load import (
    ClassifyLoad,
    Poller,
    WriteLoop,
    check_acknowledged,
    lost_in_transit,
    seed_labelset,
    verify,
)
from replica_setup import DRAIN_S, SHUTDOWN_S, replica_cluster, require_haproxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROLLS = 5
KILLS = 10
SWAPS = 1000


@pytest.fixture(scope="module")
def cluster(pg_admin_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with replica_cluster(pg_admin_engine, tmp_path_factory.mktemp("slow")) as c:
        yield c


def test_rolling_restarts_fail_nothing(cluster: Cluster) -> None:
    writer = seed_labelset(cluster.url, "rolls", seed=11)
    restarts = 0
    with (
        ClassifyLoad(cluster.url, "rolls", keep=True) as load,
        WriteLoop(cluster.url, "rolls-w", period=0.3, new_names=False) as writes,
    ):
        for _ in range(ROLLS):
            for i in range(3):
                code, _took, _loading = cluster.restart(i, exit_timeout=DRAIN_S + SHUTDOWN_S + 10)
                assert code == 0, cluster.log_tail(i)
                restarts += 1
        time.sleep(1.0)
    print(
        f"\n{restarts} rolling restarts ({ROLLS} rounds): {load.tally.ok} classify, "
        f"{writes.acks} writes through the proxy, {len(load.tally.failed)} + "
        f"{len(writes.failed)} failed"
    )
    assert not load.tally.failed, load.tally.failed[:5]
    assert not writes.failed, writes.failed[:5]
    verdict = verify(load.tally.samples, writer.versions, dict(enumerate(load.queries)))
    assert not (verdict.mixed or verdict.wrong or verdict.backwards), verdict
    check_acknowledged(cluster, writes)


def test_repeated_sigkill_fails_no_classify_and_loses_no_write(cluster: Cluster) -> None:
    writer = seed_labelset(cluster.url, "kills", seed=12)
    with (
        ClassifyLoad(cluster.url, "kills") as load,
        WriteLoop(cluster.url, "kills-w", period=0.1, new_names=True) as writes,
    ):
        for kill in range(KILLS):
            victim = kill % 3
            time.sleep(0.5 + 0.15 * kill % 1.0)  # a different moment of the load each time
            cluster.sigkill(victim)
            cluster.wait_proxy_state(victim, "DOWN", timeout=10)
            cluster.start_and_watch(victim)
        time.sleep(1.0)
    print(
        f"\n{KILLS} SIGKILLs: {load.tally.ok} classify, {len(load.tally.failed)} failed; "
        f"{writes.acks} writes acknowledged, {len(writes.failed)} refused or lost (502)"
    )
    assert not load.tally.failed, load.tally.failed[:5]
    verdict = verify(load.tally.samples, writer.versions, dict(enumerate(load.queries)))
    assert not (verdict.mixed or verdict.wrong or verdict.backwards), verdict
    assert all(lost_in_transit(f) for f in writes.failed), writes.failed
    check_acknowledged(cluster, writes)


def test_a_thousand_swaps_across_replicas_under_load(cluster: Cluster) -> None:
    name = "swaps"
    writer = seed_labelset(cluster.url, name, seed=13)
    five_xx = 0
    with (
        ClassifyLoad(cluster.url, name) as load,
        Poller([r.url for r in cluster.replicas], name) as poller,
        httpx.Client(base_url=cluster.url, timeout=60) as http,
    ):
        start = time.monotonic()
        while writer.swaps < SWAPS + 1:
            writer.write(http)  # through the proxy: leastconn spreads the writes
        took = time.monotonic() - start
        final = max(writer.versions)
        deadline = time.monotonic() + 10
        while min(poller.latest(i) for i in range(3)) < final:
            assert time.monotonic() < deadline, "the last version never reached every replica"
            time.sleep(0.01)
        time.sleep(0.2)
    failed = load.tally.failed + poller.failed
    five_xx = sum(1 for f in failed if ": 5" in f)
    samples = load.tally.samples
    verdict = verify(samples, writer.versions, dict(enumerate(load.queries)))
    direct = verify(poller.samples, writer.versions, dict.fromkeys(range(3), poller.query))
    served = {v for s in samples for v, _, _ in s.results}
    print(
        f"\n{writer.swaps - 1} swaps in {took:.1f} s through the proxy; {verdict.responses} "
        f"classify via the proxy + {direct.responses} direct, {len(served)} versions served; "
        f"partial {len(verdict.wrong) + len(direct.wrong)}, mixed "
        f"{len(verdict.mixed) + len(direct.mixed)}, backwards "
        f"{len(verdict.backwards) + len(direct.backwards)}, 5xx {five_xx}"
    )
    assert writer.swaps - 1 >= SWAPS
    assert not failed, failed[:5]
    for v in (verdict, direct):
        assert not (v.mixed or v.wrong or v.backwards), (v.mixed[:3], v.wrong[:3], v.backwards[:3])
    assert len(served) > 50  # the clients really ran across the swaps


# -- R4: PostgreSQL restarted under the replicas -------------------------------------------------


def _pg_ctl(action: str, *extra: str) -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra],
        check=False,
        capture_output=True,
        timeout=120,
    )


def _pg_ready() -> bool:
    probe = ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]
    return subprocess.run(probe, check=False, timeout=10).returncode == 0


@pytest.mark.skipif(
    shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir(),
    reason="needs the machine's pg_ctlcluster to stop and start the local PostgreSQL",
)
def test_r4_replicas_recover_from_a_postgres_restart(pg_url: str, tmp_path: Path) -> None:
    require_haproxy()
    name = "r4"
    # Polling once a minute: whatever arrives within the test came through LISTEN/NOTIFY.
    env = {"ZSINDEX_REFRESH_INTERVAL_S": "60", "ZSINDEX_DRAIN_S": "0.5"}
    with Cluster(pg_url, tmp_path, env=env) as c:
        writer = seed_labelset(c.replicas[0].url, name, seed=14)
        pids = [c.proc(i).pid for i in range(3)]
        with Poller([r.url for r in c.replicas], name) as poller:
            deadline = time.monotonic() + 10
            while min(poller.latest(i) for i in range(3)) < max(writer.versions):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            try:
                _pg_ctl("stop", "-m", "immediate")
                assert not _pg_ready(), "PostgreSQL did not stop"
                down = time.monotonic()
                codes: dict[int, str] = {}
                while len(codes) < 3 and time.monotonic() - down < 15:
                    for i in range(3):
                        r = c.readyz(i, timeout=10)
                        if r.status_code == 503:
                            codes[i] = r.json()["code"]
                    time.sleep(0.2)
            finally:
                while not _pg_ready():
                    _pg_ctl("start")
                    time.sleep(0.5)
            outage = time.monotonic() - down
            # Written at once, directly in the store's first moments back: the replicas may not
            # have re-LISTENed yet, so only a resync on reconnect picks this up.
            with httpx.Client(base_url=c.replicas[0].url, timeout=60) as http:
                for _attempt in range(100):
                    rows = unit_rows(4, seed=99)
                    r = http.put(
                        f"/v1/labelsets/{name}/embeddings",
                        json=import_body([f"after{j}" for j in range(4)], rows),
                        headers=auth(),
                    )
                    if r.status_code == 201:
                        break
                    time.sleep(0.2)
                assert r.status_code == 201, r.text
                after = int(r.json()["version"])
            written = time.monotonic()
            for i in range(3):
                c.wait_ready(i, timeout=30)
            deadline = time.monotonic() + 20
            while min(poller.latest(i) for i in range(3)) < after:
                assert time.monotonic() < deadline, [poller.latest(i) for i in range(3)]
                time.sleep(0.01)
            caught_up = time.monotonic() - written
        assert codes == dict.fromkeys(range(3), "store_unavailable"), codes
        assert [c.proc(i).pid for i in range(3)] == pids  # no replica restarted
        assert all(c.proc(i).poll() is None for i in range(3))
        print(
            f"\nR4: PostgreSQL down {outage:.1f} s; the version written after it reached all 3 "
            f"replicas {caught_up:.2f} s later (polling every 60 s)"
        )
