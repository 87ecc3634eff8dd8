"""The cluster benchmark's workers: started by distributed's CLIs, with the environment
the benchmark says (no ``AWS_*`` variable; ``--worker-env`` reaching the worker process
through its nanny, before the process starts, where glibc reads ``MALLOC_*``)."""

from __future__ import annotations

import os

import pytest

from benchmarks.cluster import cli_cluster, parse_env


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
