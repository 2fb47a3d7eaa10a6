#!/usr/bin/env bash
# Make sure Debian's chromium is there for the console's browser tests (tests/test_console.py).
# Installs it with apt-get when it is missing and this runs as root; otherwise does nothing.
# Always exits 0: without a browser those tests skip and say why.
set -u

if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure-chromium: chromium is missing and this is not root: the browser tests will skip" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: chromium is missing and there is no apt-get: the browser tests will skip" >&2
  exit 0
fi

echo "ensure-chromium: installing Debian's chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
# One install at a time, should two test runs start together.
exec 9>/tmp/authbroker-ensure-chromium.lock
if command -v flock >/dev/null 2>&1; then
  flock -w 900 9 || true
fi
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! { apt-get update -qq && apt-get install -y -qq chromium; } >&2; then
  echo "ensure-chromium: apt-get could not install chromium: the browser tests will skip" >&2
fi
exit 0
