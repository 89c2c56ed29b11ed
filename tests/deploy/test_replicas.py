"""R1-R3 and the readiness fault, fast tier: 3 ``zsindex serve`` replicas on loopback sharing one
PostgreSQL schema, behind a real HAProxy running ``deploy/haproxy.cfg``, 8 clients classifying
through the proxy all the while.

- R1: 50 re-registrations through one replica; every replica serves each new version within
  250 ms (p50/p99 printed); no response mixes versions or goes backwards;
- R2: a rolling restart (SIGTERM) of all 3: /readyz turns 503 "draining" at once, HAProxy
  takes the replica out before its drain ends, each exits 0 within its bound, 0 failed requests
  (reads and writes); each restarted replica, while still loading (listening, /readyz 503),
  gets no request through the proxy (its own count), and gets requests once ready;
- R3: SIGKILL of one replica: classify retried by the proxy, 0 failed; every acknowledged
  write present afterwards, on every replica.

Long loops are in test_replicas_slow.py. Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from deploy_cluster import Cluster
from deploy_load import (
    ClassifyLoad,
    Poller,
    WriteLoop,
    check_acknowledged,
    lost_in_transit,
    percentile,
    seed_labelset,
    verify,
)
from replica_setup import DRAIN_S, SHUTDOWN_S, replica_cluster

pytestmark = [pytest.mark.postgres]

PROPAGATION_FLOOR_S = 0.25
SWAPS = 50


@pytest.fixture(scope="module")
def cluster(pg_admin_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with replica_cluster(pg_admin_engine, tmp_path_factory.mktemp("cluster")) as c:
        yield c


def test_proxy_sends_nothing_to_a_loading_replica(cluster: Cluster) -> None:
    """api3 restarts, as a new container would, with an empty home (no index cache), while its
    store reads are held up (table locks on the labels and embeddings): it is alive and loading
    for as long as the test wants; not one request may reach it meanwhile."""
    from sqlalchemy import create_engine, text

    name, victim, hold_s = "loading", 2, 3.0
    seed_labelset(cluster.url, name, seed=4)
    engine = create_engine(cluster.database_url)
    observed: list[tuple[str, int, int]] = []  # HAProxy status, classify served, /readyz status
    with ClassifyLoad(cluster.url, name) as load:
        cluster.sigterm(victim)
        assert cluster.wait_exit(victim, DRAIN_S + SHUTDOWN_S + 10) == 0
        shutil.rmtree(cluster.replicas[victim].home, ignore_errors=True)  # may hold no cache
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE labels, embedding_chunks IN ACCESS EXCLUSIVE MODE"))
            cluster.start_replica(victim)
            started, loading_since = time.monotonic(), None
            # Held for hold_s past its first 503: many HAProxy checks (inter 400ms, rise 2).
            while loading_since is None or time.monotonic() - loading_since < hold_s:
                assert time.monotonic() - started < 90, cluster.log_tail(victim)
                status = cluster.server_states()["api3"]["status"]
                try:
                    served = cluster.requests_seen(victim, "/v1/classify")
                    ready = cluster.readyz(victim).status_code
                except httpx.HTTPError:
                    served, ready = -1, 0  # not listening (yet)
                observed.append((status, served, ready))
                if ready == 503 and loading_since is None:
                    loading_since = time.monotonic()
                time.sleep(0.1)
            conn.rollback()  # lets the load go on
        detail = cluster.wait_ready(victim)["detail"]
        cluster.wait_proxy_state(victim, "UP")
        time.sleep(1.5)
        served_after = cluster.requests_seen(victim, "/v1/classify")
    engine.dispose()
    print(
        f"\nloading replica: {len(observed)} looks, {hold_s:g} s held up while listening "
        f"({sum(r == 503 for _, _, r in observed)} /readyz 503), then {served_after} classify "
        f"once ready; {load.tally.ok} classify via the proxy"
    )
    assert not load.tally.failed, load.tally.failed[:5]
    assert all(ready != 200 for _, _, ready in observed), "ready before it could have loaded"
    assert all(not status.startswith("UP") for status, _, _ in observed), observed
    assert all(served <= 0 for _, served, _ in observed), observed
    assert detail["loaded"][name]["version"] >= 1, detail
    assert served_after > 0, "never sent traffic once ready"


def test_r1_every_replica_serves_each_new_version_within_250ms(cluster: Cluster) -> None:
    name = "prop"
    writer_url = cluster.replicas[0].url
    writer = seed_labelset(writer_url, name, seed=1)
    urls = [r.url for r in cluster.replicas]
    lags: list[list[float]] = []  # per swap, per replica: seconds from acknowledgement to served
    with (
        ClassifyLoad(cluster.url, name) as load,
        Poller(urls, name) as poller,
        httpx.Client(base_url=writer_url, timeout=60) as http,
    ):
        deadline = time.monotonic() + 20
        while min(poller.latest(i) for i in range(3)) < max(writer.versions):
            assert time.monotonic() < deadline, "the seed version never reached every replica"
            time.sleep(0.01)
        for _ in range(SWAPS):
            version = writer.write(http)
            acked = writer.acked_at[version]
            give_up = acked + 10.0  # well past the floor: a miss is measured, not waited out
            while min(poller.latest(i) for i in range(3)) < version and time.monotonic() < give_up:
                time.sleep(0.002)
            row = []
            for i in range(3):
                seen = [t for v, t in poller.first_seen[i].items() if v >= version]
                row.append(max(0.0, min(seen) - acked) if seen else 10.0)
            lags.append(row)
            time.sleep(0.02)  # clients classify on this version for a moment
    per_swap = [max(row) for row in lags]
    followers = [lag for row in lags for lag in row[1:]]
    p50, p99 = percentile(per_swap, 50), percentile(per_swap, 99)
    print(
        f"\nR1 propagation over {SWAPS} swaps (slowest of 3 replicas per swap): "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(per_swap) * 1000:.1f} ms; "
        f"followers p50 {percentile(followers, 50) * 1000:.1f} ms, "
        f"p99 {percentile(followers, 99) * 1000:.1f} ms; "
        f"{load.tally.ok} classify through the proxy, {len(poller.samples)} direct"
    )
    assert not load.tally.failed, load.tally.failed[:5]
    assert not poller.failed, poller.failed[:5]
    queries = {c: q for c, q in enumerate(load.queries)}
    verdict = verify(load.tally.samples, writer.versions, queries)
    direct = verify(poller.samples, writer.versions, dict.fromkeys(range(3), poller.query))
    for v in (verdict, direct):
        assert not v.mixed, v.mixed[:5]
        assert not v.wrong, v.wrong[:5]
        assert not v.backwards, v.backwards[:5]
    assert {s.server for s in load.tally.samples} == {"api1", "api2", "api3"}
    assert p99 <= PROPAGATION_FLOOR_S, f"p99 {p99 * 1000:.0f} ms over the 250 ms floor"


def test_r2_rolling_restart_fails_nothing_and_no_request_reaches_a_loading_replica(
    cluster: Cluster,
) -> None:
    name = "roll"
    writer = seed_labelset(cluster.url, name, seed=2)
    took: list[float] = []
    down_after: list[float] = []
    loading: list[int] = []
    with (
        ClassifyLoad(cluster.url, name) as load,
        WriteLoop(cluster.url, "roll-w", period=0.3, new_names=False) as writes,
    ):
        time.sleep(1.0)
        for i in range(3):
            sent = time.monotonic()
            cluster.sigterm(i)
            while (r := cluster.readyz(i)).status_code == 200 and time.monotonic() - sent < 1.0:
                time.sleep(0.01)  # the signal handler runs on the server's own loop
            assert r.status_code == 503 and r.json()["code"] == "draining", r.text
            down_after.append(cluster.wait_proxy_state(i, "DOWN", timeout=DRAIN_S))
            code = cluster.wait_exit(i, DRAIN_S + SHUTDOWN_S + 10)
            took.append(time.monotonic() - sent)
            assert code == 0, cluster.log_tail(i)
            # Loading (listening, /readyz 503 not_ready): not one classify request reaches it.
            loading.append(cluster.start_and_watch(i))
        time.sleep(1.0)
        after_restart = [cluster.requests_seen(i, "/v1/classify") for i in range(3)]
    print(
        f"\nR2 rolling restart: {load.tally.ok} classify, {writes.acks} writes through the "
        f"proxy; DOWN in HAProxy {[round(d, 2) for d in down_after]} s after SIGTERM, exit "
        f"{[round(t, 1) for t in took]} s after SIGTERM (drain {DRAIN_S:g} s); "
        f"{loading} not-ready answers while loading, then {after_restart} classify served"
    )
    assert all(after_restart), "a restarted replica got no traffic once ready"
    assert not load.tally.failed, load.tally.failed[:5]
    assert not writes.failed, writes.failed[:5]
    assert all(t < DRAIN_S + SHUTDOWN_S for t in took)
    verdict = verify(load.tally.samples, writer.versions, dict(enumerate(load.queries)))
    assert not (verdict.mixed or verdict.wrong or verdict.backwards), verdict
    assert writes.acks == writes.swap and writes.acks >= 10
    check_acknowledged(cluster, writes)


def test_r3_sigkill_under_load_fails_no_classify_and_loses_no_write(cluster: Cluster) -> None:
    name = "kill"
    writer = seed_labelset(cluster.url, name, seed=3)
    before = cluster.server_states()
    victim = 1
    with (
        ClassifyLoad(cluster.url, name) as load,
        WriteLoop(cluster.url, "kill-w", period=0.1, new_names=True) as writes,
    ):
        time.sleep(1.5)
        at_kill = load.count()
        cluster.sigkill(victim)
        down = cluster.wait_proxy_state(victim, "DOWN", timeout=10)
        time.sleep(1.0)
        cluster.start_and_watch(victim)
        time.sleep(1.0)
    after = cluster.server_states()
    retried = sum(
        int(after[s]["wretr"] or 0)
        + int(after[s]["wredis"] or 0)
        - int(before[s]["wretr"] or 0)
        - int(before[s]["wredis"] or 0)
        for s in after
    )
    print(
        f"\nR3 SIGKILL of api{victim + 1}: {load.tally.ok} classify ({at_kill} before the kill), "
        f"DOWN in HAProxy after {down:.2f} s, {retried} retries/redispatches by HAProxy; "
        f"{len(writes.acked)} writes acknowledged, {len(writes.failed)} refused or lost"
    )
    assert not load.tally.failed, load.tally.failed[:5]
    assert load.count() > at_kill + 50  # the load went on past the kill
    assert retried > 0  # the kill did hit requests, and the proxy re-sent them
    verdict = verify(load.tally.samples, writer.versions, dict(enumerate(load.queries)))
    assert not (verdict.mixed or verdict.wrong or verdict.backwards), verdict
    # A write on the killed replica may fail (it is never re-sent): the proxy's 502, or the
    # connection dropped (the replica died mid-answer); never an error of zsindex's own.
    assert all(lost_in_transit(f) for f in writes.failed), writes.failed
    check_acknowledged(cluster, writes)
