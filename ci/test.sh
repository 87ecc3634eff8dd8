#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: SeaweedFS, HSDS and the
# active-storage server are started by the fixtures on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
