#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: SeaweedFS, HSDS and the
# active-storage server are started by the fixtures on free loopback ports.
# Without arguments the >>> examples in the package's docstrings run first (doctests);
# with arguments, only what they name (e.g. `ci/test.sh tests/xarray -x`).
# Tests run on H5DASK_TEST_WORKERS pytest-xdist workers (default 2; 0: in this one
# process, e.g. for --pdb), a test module (or class) per worker at a time, the slowest
# modules first (SLOW_MODULES in tests/conftest.py); each worker starts its own servers,
# on free ports with temporary directories of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
.venv/bin/ruff check .
if [ "$#" -eq 0 ]; then
    .venv/bin/python -m pytest -q -p no:cacheprovider --doctest-modules h5dask
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider \
    -n "${H5DASK_TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder "$@"
