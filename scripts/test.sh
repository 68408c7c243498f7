#!/usr/bin/env bash
# Sets up everything the tests need (system packages, venv, browser) and runs
# lint, type checks and the whole suite. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)
command -v turnserver >/dev/null || missing+=(coturn)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

.venv/bin/ruff check src tests examples bench
.venv/bin/mypy --strict src
exec .venv/bin/python -m pytest "$@"
