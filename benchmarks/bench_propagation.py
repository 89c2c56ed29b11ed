#!/usr/bin/env python
"""How fast a new label-set version reaches the other replicas: LISTEN/NOTIFY vs polling.

Starts 3 real ``zsindex serve`` replicas on loopback ports over one fresh PostgreSQL schema,
behind a real HAProxy running ``deploy/haproxy.cfg`` (the harness of tests/deploy). ``api1``
takes the writes, ``api2`` follows the store with notifications (``ZSINDEX_NOTIFY=1``, the
default) and ``api3`` is the polling fallback (``ZSINDEX_NOTIFY=0``, every
``ZSINDEX_REFRESH_INTERVAL_S``, default 2 s). While N clients classify through the proxy, the
label set is re-registered ``--swaps`` times through ``api1``, at random points of the poll
period; after each acknowledgement a poller on every replica classifies directly until it
answers with the new version. Prints
p50/p99/max of acknowledgement → served, per replica, and the pollers' own request time (the
resolution of the measurement). Needs haproxy (``bash scripts/ensure_haproxy.sh``).

Example::

    .venv/bin/python benchmarks/bench_propagation.py --swaps 50
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "deploy"))  # the cluster harness the tests use

ADMIN_URL = os.environ.get(
    "ZSINDEX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GIVE_UP_S = 10.0  # a version not served by then counts as this (and is reported)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8, help="classify clients on the proxy")
    parser.add_argument("--refresh", type=float, default=2.0, help="ZSINDEX_REFRESH_INTERVAL_S")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="PostgreSQL for a temp schema")
    args = parser.parse_args()

    import httpx
    from deploy_cluster import Cluster
    from deploy_load import ClassifyLoad, Poller, percentile, seed_labelset
    from replica_setup import pg_schema
    from sqlalchemy import create_engine

    engine = create_engine(args.admin_url)
    env = {"ZSINDEX_REFRESH_INTERVAL_S": str(args.refresh), "ZSINDEX_DRAIN_S": "0.5"}
    roles = ["writer (NOTIFY)", "NOTIFY", "polling"]
    lags: list[list[float]] = [[], [], []]
    with (
        tempfile.TemporaryDirectory(prefix="zs-prop-") as tmp,
        pg_schema(engine) as url,
        Cluster(url, Path(tmp), env=env, replica_env={2: {"ZSINDEX_NOTIFY": "0"}}) as cluster,
    ):
        name = "bench-prop"
        writer = seed_labelset(cluster.replicas[0].url, name, seed=5)
        with (
            ClassifyLoad(cluster.url, name, clients=args.clients, keep=False) as load,
            Poller([r.url for r in cluster.replicas], name) as poller,
            httpx.Client(base_url=cluster.replicas[0].url, timeout=60) as http,
        ):
            rng = random.Random(0)
            started = time.monotonic()
            for _ in range(args.swaps):
                version = writer.write(http)
                acked = writer.acked_at[version]
                while (
                    min(poller.latest(i) for i in range(3)) < version
                    and time.monotonic() < acked + GIVE_UP_S
                ):
                    time.sleep(0.002)
                for i in range(3):
                    seen = [t for v, t in poller.first_seen[i].items() if v >= version]
                    lags[i].append(max(0.0, min(seen) - acked) if seen else GIVE_UP_S)
                # A pause at a random point of the poll period: writing right after a poll
                # answered would time every write just after a poll (lag ~ a whole period).
                time.sleep(rng.uniform(0.02, args.refresh))
            took = time.monotonic() - started
            resolution = list(poller.latencies)
    load_note = f"{load.tally.ok} classify via the proxy, {len(load.tally.failed)} failed"
    print(
        f"# propagation: {args.swaps} swaps, 3 replicas, {args.clients} clients, "
        f"{platform.machine()} {os.cpu_count()} cores, refresh {args.refresh:g} s"
    )
    print(f"# {load_note}; {took:.1f} s")
    print("| replica | follows by | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for i, role in enumerate(roles):
        values = lags[i]
        print(
            f"| api{i + 1} | {role} | {percentile(values, 50) * 1000:.1f} | "
            f"{percentile(values, 99) * 1000:.1f} | {max(values) * 1000:.1f} |"
        )
    print(
        f"poller request time (resolution): p50 {percentile(resolution, 50) * 1000:.1f} ms, "
        f"p99 {percentile(resolution, 99) * 1000:.1f} ms"
    )


if __name__ == "__main__":  # the client process is spawned: it re-imports this module
    main()
