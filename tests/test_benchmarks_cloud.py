"""The cloud benchmark's derived figures (pure arithmetic on measured series)."""

from __future__ import annotations

import pytest

from benchmarks.cloud import COMPUTE_ONLY_AUTO, CloudRun, auto_bound, markdown, summary
from benchmarks.common import Series


def _run(raw_s: list[float], compute_s: list[float] | None) -> CloudRun:
    reads = [(Series("raw: every GET at once", 256, raw_s), "raw")]
    if compute_s is not None:
        reads.append((Series(COMPUTE_ONLY_AUTO, 256, compute_s), "floor"))
    return CloudRun(30.0, reads=reads)


def test_auto_bound_is_raw_over_raw_plus_the_in_memory_sum():
    run = _run([0.5, 0.6, 0.7], [0.1, 0.15, 0.2])
    assert auto_bound(run) == pytest.approx(0.6 / (0.6 + 0.15))
    assert "0.80 x raw" in summary([run])
    assert "0.80 x raw" in markdown([run], 256, 3)


def test_auto_bound_needs_both_rows():
    run = _run([0.5], None)
    assert auto_bound(run) is None
    assert "Upper bound" not in summary([run]) and "Upper bound" not in markdown([run], 256, 1)
