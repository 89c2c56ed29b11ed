#!/usr/bin/env bash
# The web page test drives Debian's Chromium with Playwright (no browser download). Install it
# from Debian's packages when it is missing; fail loudly when that is impossible.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: chromium is missing and cannot be installed here (needs root and apt-get);" \
       "install Debian's chromium package to run the browser test" >&2
  exit 1
fi
echo "installing Debian's chromium for the browser test" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
