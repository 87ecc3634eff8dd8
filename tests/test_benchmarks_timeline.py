"""The timeline probe's arithmetic: GETs in flight over time, and one round's line."""

from __future__ import annotations

import pytest

from benchmarks.timeline import GetTimes, in_flight, round_report


def test_in_flight_is_time_weighted():
    # two GETs overlap for 1 of 3 seconds, then a third runs alone after a gap
    spans = [(0.0, 2.0), (1.0, 2.0), (2.5, 3.0)]
    mean, peak = in_flight(spans)
    assert peak == 2
    assert mean == pytest.approx((1 * 1.0 + 2 * 1.0 + 0 * 0.5 + 1 * 0.5) / 3.0)
    assert in_flight([]) == (0.0, 0)


def test_a_get_is_timed_from_start_to_end_and_unstarted_ends_are_ignored():
    gets = GetTimes()
    gets.end("never-started")
    gets.start("k")
    gets.end("k")
    assert list(gets.spans) == ["k"]
    start, end = gets.spans["k"]
    assert end >= start


def test_round_report_states_gets_ramp_and_tail():
    gets = GetTimes(spans={"a": (10.1, 10.3), "b": (10.2, 10.6)})
    line = round_report("round 0 x", 10.0, 10.7, (0.5, 0.3, 0.4), gets)
    assert "2 GETs" in line and "peak 2" in line
    assert "per GET 300 ms [200-400]" in line
    assert "ramp 100 ms" in line and "tail 100 ms" in line
    assert "CPU client 0.50 proxy 0.30 SeaweedFS 0.40 s" in line
