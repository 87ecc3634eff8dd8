#!/usr/bin/env bash
# Set up (if needed) and run the demo: embedded SeaweedFS, ingest, analysis on a
# local dask cluster, and a pushed-down reduction.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
exec .venv/bin/h5dask demo "$@"
