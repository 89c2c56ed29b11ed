#!/usr/bin/env bash
# Make sure the local PostgreSQL the tests use (127.0.0.1:5432, database `test`) is up.
# Starts it with the machine's pg_ctlcluster when it is down; fails loudly when it cannot.
set -euo pipefail
host=127.0.0.1 port=5432
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
if ready; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "PostgreSQL is down: starting it" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
fi
for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
echo "error: PostgreSQL is not reachable on $host:$port; the PostgreSQL tests cannot run" >&2
exit 1
