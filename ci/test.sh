#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: SeaweedFS, HSDS and the
# active-storage server are started by the fixtures on free loopback ports.
# Without arguments the >>> examples in the package's docstrings run first (doctests);
# with arguments, only what they name (e.g. `ci/test.sh tests/xarray -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
.venv/bin/ruff check .
if [ "$#" -eq 0 ]; then
    .venv/bin/python -m pytest -q -p no:cacheprovider --doctest-modules h5dask
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
