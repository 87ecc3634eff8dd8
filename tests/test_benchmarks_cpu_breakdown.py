"""The CPU breakdown probe's arithmetic: thread groups, and what ended threads used."""

from __future__ import annotations

import threading

import pytest

from benchmarks.cpu_breakdown import GROUPS, group_of, split_round, table, thread_cpu


def test_threads_are_grouped_by_what_they_do():
    assert group_of("MainThread") == "main"
    assert group_of("ThreadPoolExecutor-0_1") == "dask threads"
    assert group_of("h5dask-io") == "h5dask I/O loop"
    assert group_of("tokio-runtime-w") == "obstore (tokio)"
    assert group_of("asyncio_0") == "other"
    assert set(GROUPS) >= {group_of(n) for n in ("MainThread", "h5dask-io", "x")}


def test_this_process_main_thread_and_a_named_thread_are_found():
    started, stop = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        stop.wait(10)

    worker = threading.Thread(target=work, name="ThreadPoolExecutor-9_0")
    worker.start()
    started.wait(10)
    try:
        groups = {group for group, _ in thread_cpu().values()}
    finally:
        stop.set()
        worker.join()
    assert {"main", "dask threads"} <= groups


def test_a_round_splits_per_group_and_the_rest_went_to_ended_threads():
    before = {1: ("main", 1.0), 2: ("dask threads", 2.0)}
    after = {1: ("main", 1.25), 2: ("dask threads", 2.5), 3: ("obstore (tokio)", 0.125)}
    used = split_round(before, after, client_seconds=1.0)
    assert used["main"] == pytest.approx(0.25)
    assert used["dask threads"] == pytest.approx(0.5)
    assert used["obstore (tokio)"] == pytest.approx(0.125)  # started within the round
    assert used["ended threads"] == pytest.approx(0.125)


def test_table_has_a_row_per_reader_and_a_column_per_group():
    text = table({"h5dask": {"client": 0.5, "main": 0.05, "minor faults": 1234.0}})
    header, rule, row = text.splitlines()
    assert header.count("|") == rule.count("|") == row.count("|")
    assert "| h5dask | 0.500 | 0.050 |" in row and "1,234" in row
