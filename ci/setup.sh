#!/usr/bin/env bash
# Create ./.venv and install h5dask with everything the demo and the tests need.
# Idempotent: re-runs pip only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
say() { echo "ci/setup.sh: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PY" --version 2>&1); the first run takes a few minutes" \
        "(pip downloads and installs h5dask with its demo and test dependencies)"
    "$PY" -m venv .venv
fi
stamp=.venv/.h5dask-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    [ -f "$stamp" ] && say "pyproject.toml changed: updating .venv"
    say "installing: pip install -e \".[test]\""
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -e ".[test]"
    echo "$want" > "$stamp"
    say ".venv is ready"
fi
# hey (Debian): optional, the load tool of tests/reliability/test_active_server.py's load
# test, which skips without it. Installed with apt-get only when running as root.
if ! command -v hey >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing hey with apt-get (as root; optional: one load test skips without it)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey; } \
            >/dev/null 2>&1 || say "note: could not install hey; the load test will skip"
    elif [ ! -f .venv/.hey-noted ]; then
        say "note: 'hey' is not installed (optional: one load test skips without it;" \
            "install it with your package manager, e.g. apt-get install hey)"
        touch .venv/.hey-noted
    fi
fi
