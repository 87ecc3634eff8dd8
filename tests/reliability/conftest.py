"""Fixtures of the reliability tests: the fault proxy in front of SeaweedFS, and the
``slow`` mark.

Tests marked ``@pytest.mark.slow`` here are the long variants (many more faults, kill
points or mutated inputs); they are skipped unless slow tests are asked for::

    ci/test.sh tests/reliability -m slow            # only the slow variants
    H5DASK_SLOW=1 ci/test.sh tests/reliability      # everything
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultproxy import FaultProxy  # noqa: E402


def slow_enabled(config: pytest.Config) -> bool:
    return "slow" in (config.getoption("-m") or "").replace("not slow", "") or bool(
        os.environ.get("H5DASK_SLOW"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slow") and not slow_enabled(item.config):
        pytest.skip("slow variant: run with `ci/test.sh tests/reliability -m slow`")


@pytest.fixture(scope="module")
def fault_proxy(seaweedfs: Any) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the session's SeaweedFS, injecting nothing until
    a test sets its rates (reset after each test by ``proxied``)."""
    port = int(seaweedfs.endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port, seed=0) as proxy:
        yield proxy


@pytest.fixture
def proxied(fault_proxy: FaultProxy) -> Iterator[FaultProxy]:
    """The module's proxy, with no faults and zeroed counters before and after the test."""
    def reset() -> None:
        fault_proxy.set_rates({}, seed=0)
        fault_proxy.reset_counts()
        fault_proxy.methods = None
        fault_proxy.path_filter = None
        fault_proxy.delay = 0.2

    reset()
    yield fault_proxy
    reset()


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """One process spinning on a core while the test runs (a busy machine)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait(10)
