#!/usr/bin/env bash
# The replica tests (tests/deploy) put a real HAProxy, Debian's, in front of `zsindex serve`
# processes. Install it from Debian's packages when it is missing; fail loudly when that is
# impossible (the tests then fail too, under ZSINDEX_REQUIRE_HAPROXY=1).
set -euo pipefail
if command -v haproxy >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: haproxy is missing and cannot be installed here (needs root and apt-get);" \
       "install Debian's haproxy package to run the replica tests" >&2
  exit 1
fi
echo "installing Debian's haproxy for the replica tests" >&2
apt-get update -qq
# Only the binary is wanted: no service is started (policy-rc.d would be needed in a container).
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
command -v haproxy >/dev/null
