"""The cluster benchmark's workers: started by distributed's CLIs, with the environment
the benchmark says (no ``AWS_*`` variable; ``--worker-env`` reaching the worker process
through its nanny, before the process starts, where glibc reads ``MALLOC_*``)."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks.cluster import (
    READ_AHEAD_ENV,
    cli_cluster,
    markdown,
    parse_env,
    read_ahead_settings,
    run_cluster,
)
from benchmarks.common import MiB
from benchmarks.data import VARIANTS, Synthetic, write_variant
from benchmarks.services import Services


def test_worker_env_reaches_the_worker_process(monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-for-workers")
    env = parse_env(["MALLOC_MMAP_THRESHOLD_=33554432"])

    def _getenv(names: list[str]) -> dict[str, str | None]:  # pickled by value
        return {name: os.environ.get(name) for name in names}

    with cli_cluster(1, 1, worker_env=env) as (sched_file, procs), \
            distributed.Client(scheduler_file=str(sched_file), timeout=60) as client:
        client.wait_for_workers(1, timeout=120)
        (worker_env,) = client.run(_getenv, ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                             "AWS_ACCESS_KEY_ID"]).values()
        (pid,) = client.run(os.getpid).values()
    assert worker_env == {"MALLOC_MMAP_THRESHOLD_": "33554432",
                          # distributed's own (its nanny sets it before spawning the worker)
                          "MALLOC_TRIM_THRESHOLD_": "65536",
                          "AWS_ACCESS_KEY_ID": None}
    assert pid != procs[1].pid  # the worker runs in its nanny's child process
    assert all(p.poll() is not None for p in procs)  # all stopped on exit


def test_parse_env_refuses_an_assignment_without_equals():
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_env(["MALLOC_MMAP_THRESHOLD_"])


def test_read_ahead_settings_parse_and_refuse_others():
    assert read_ahead_settings("off") == ["off"]
    assert read_ahead_settings("on, off") == ["on", "off"]
    with pytest.raises(argparse.ArgumentTypeError, match="on, off or on,off"):
        read_ahead_settings("maybe")


def test_workers_read_ahead_off_reads_every_chunk_once_in_the_workers():
    """``--worker-read-ahead off``: each worker process runs with a read-ahead budget of
    0, takes nothing from read-ahead, and the workers still read every chunk byte once
    (exact sum checked by run_cluster); the table's title says read-ahead is off."""
    pytest.importorskip("distributed")
    data = Synthetic(4)  # 4 chunk objects of 4 MiB
    variant = next(v for v in VARIANTS if v.slug == "plain")
    env = READ_AHEAD_ENV["off"]
    with Services() as services:
        written = write_variant(services, data, variant, set())
        run = run_cluster(written.domain_url, services.storage_options, 2, 1, data, 1,
                          lambda *_: None, {}, worker_env=env)
    assert list(run.readahead_budget.values()) == [0, 0]
    assert list(run.readahead_used.values()) == [0, 0]
    assert run.client_chunk_bytes == 0
    assert sum(run.worker_chunk_bytes.values()) == data.nbytes  # each chunk read once
    text = markdown([run], 30, data.nbytes / MiB, "inf", env, "off")
    title = text.splitlines()[0]
    assert "read-ahead OFF (`H5DASK_READ_AHEAD_BYTES=0`" in title
    assert "`H5DASK_READ_AHEAD_BYTES=0`" in text.splitlines()[2]  # the environment line
    assert "read-ahead OFF" not in markdown([run], 30, data.nbytes / MiB, "inf", {}, "on")
