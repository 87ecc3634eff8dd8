#!/usr/bin/env bash
# Prove that a clone alone is enough (issue 14): copy this checkout (its tracked and
# untracked-but-not-ignored files; no .venv, nothing from outside the repository) into a
# fresh folder under /tmp, with no sibling folder (no shared data) beside it, and run there,
# from scratch, the README's commands: by default ci/test.sh (set-up + the whole suite),
# a small ci/demo.sh, then ci/bench-quick.sh on the same fresh .venv. Give other
# commands as arguments, e.g. `ci/from-clone.sh ci/demo.sh --size-mib 16`.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work=$(mktemp -d "${TMPDIR:-/tmp}/h5dask-clone-XXXXXX")
trap 'rm -rf "$work"' EXIT
copy="$work/h5dask"
mkdir "$copy"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$copy"
else
    (cd "$src" && tar --exclude=./.venv --exclude=./.git -cf - .) | tar -xf - -C "$copy"
fi
if [ -e "$work/shared" ] || [ -e "$copy/.venv" ]; then
    echo "ci/from-clone.sh: the copy is not fresh" >&2
    exit 1
fi
echo "ci/from-clone.sh: running in a fresh copy, $copy (nothing beside it)" >&2
cd "$copy"
unset PYTHONPATH VIRTUAL_ENV  # only the copy's own .venv and package
if [ $# -gt 0 ]; then
    "$@"
else
    ci/test.sh
    ci/demo.sh --size-mib 32 --output "$work/demo-output"
    if [ -x ci/bench-quick.sh ]; then ci/bench-quick.sh; fi
fi
