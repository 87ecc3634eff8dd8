#!/usr/bin/env bash
# The benchmark guard CI runs after the tests: tiny sizes, about half a minute, prints
# h5dask's throughput as ratios to raw object-store reads and to Zarr v3, and the other
# targets of issue 6. It never fails on timing (a shared CI machine is noisy); it fails
# only if h5dask gives a wrong answer or an error. The full run: see BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
# the peers' packages (zarr, ...) are in the "bench" extra; without them their rows are left out
if ! .venv/bin/python -c "import zarr" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q -e ".[bench]" \
        || echo "note: could not install the bench extra; peers without packages are skipped" >&2
fi
exec .venv/bin/python -m benchmarks.run --quick --out /dev/null "$@"
