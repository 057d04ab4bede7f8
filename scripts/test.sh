#!/usr/bin/env bash
# The one test command: installs what the suite needs (Python packages; PostgreSQL, Redis,
# redis-sentinel, nginx and Chromium from Debian's packages where missing), checks lint and
# format, runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)  # tests/test_sse.py reads a stream with curl -N
# nginx for tests/reliability/test_behind_nginx.py; Debian's redis-sentinel (the Redis binary in
# sentinel mode) for tests/reliability/test_sentinel_failover.py
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
# pytest exits 5 when it collected no test: that fails this script too (set -e).
python3 -m pytest "$@"
