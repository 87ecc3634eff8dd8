"""Shared pytest fixtures: real servers (SeaweedFS S3, HSDS) and shared data paths."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# hdf5plugin before any test module imports netCDF4: netCDF4's wheel points
# HDF5_PLUGIN_PATH at its own filter plugins (built on its own copy of HDF5); hdf5plugin
# imported after it finds Blosc "available" there, does not register its own, and h5py's
# Blosc writes then fail ("error during user callback")
import hdf5plugin  # noqa: F401, I001
import pytest
from servers.hsds import HSDSServer

from h5dask.services.seaweedfs import SeaweedFS

# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real netCDF-4 files shipped with the tests, ``tests/data`` (see its README)."""
    return PROJECT_ROOT / "tests" / "data"


# --------------------------------------------------------------------------------------
# Order: the slowest modules first
# --------------------------------------------------------------------------------------
# Tens of seconds each (`--durations`). On pytest-xdist's workers (ci/test.sh: a module
# per worker at a time, in this order) each then runs beside the rest of the suite,
# instead of one of them ending the run alone on one worker while the other is idle.
SLOW_MODULES = (
    "reliability/test_library_exit.py", "reliability/test_cli_exit_codes.py",
    "ingest/test_corpus.py", "interop/test_corpus_via_hsds.py", "test_notebooks.py",
    "services/test_seaweedfs.py", "xarray/test_task_graph.py",
    "test_demo.py", "test_benchmarks_cluster.py", "services/test_hsds_server.py",
    "reliability/test_active_attacks.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {f"tests/{module}": i for i, module in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


# --------------------------------------------------------------------------------------
# SeaweedFS (real S3)
# --------------------------------------------------------------------------------------

TEST_BUCKET = "h5dask-test"
HSDS_BUCKET = "hsds-test"


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server on free loopback ports, buckets h5dask-test and hsds-test."""
    server = SeaweedFS().start()
    try:
        for bucket in (TEST_BUCKET, HSDS_BUCKET):
            server.create_bucket(bucket)
        yield server
    finally:
        server.stop()


@pytest.fixture
def storage_options(seaweedfs: SeaweedFS) -> dict[str, Any]:
    """s3fs-style options for the SeaweedFS fixture (``key``, ``secret``, ``client_kwargs``)."""
    return seaweedfs.storage_options()


@pytest.fixture
def s3_bucket_url(seaweedfs: SeaweedFS) -> str:
    """A fresh, empty prefix for one test: ``s3://h5dask-test/<uuid hex>``."""
    return f"s3://{TEST_BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    """A dask ``LocalCluster`` of 2 worker processes (1 thread each) and its client.

    Module-scoped on purpose: while a Client lives it is dask's default scheduler, so
    tests of other modules would otherwise compute on the cluster, not in-process.
    """
    distributed = pytest.importorskip("distributed")
    # ":0": a free port; None meant dask's default 8787, with a warning when it is taken
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        yield client


# --------------------------------------------------------------------------------------
# HSDS (real server, the interoperability peer)
# --------------------------------------------------------------------------------------
# HSDSServer starts the HSDS nodes itself on free ports (HSDS's own `hsds` launcher
# pins the data nodes to 6101..), so hsds_posix and hsds_s3 can run at the same
# time; no serialization between them is needed.


@pytest.fixture(scope="session")
def hsds_posix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HSDSServer]:
    """HSDS on POSIX storage: objects in ``root_dir / bucket`` (bucket "hsdsbucket").

    Attributes: endpoint, username, password ("admin"/"admin"), root_dir, bucket;
    ``/home/admin/`` exists. See tests/servers/hsds.py for wait_for_keys() etc.
    """
    root = tmp_path_factory.mktemp("hsds-posix")
    (root / "hsdsbucket").mkdir()
    server = HSDSServer(root_dir=root, bucket="hsdsbucket").start()
    try:
        server.make_home_folders()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hsds_s3(seaweedfs: SeaweedFS) -> Iterator[HSDSServer]:
    """HSDS storing in the SeaweedFS bucket "hsds-test"; ``/home/admin/`` exists."""
    server = HSDSServer.on_seaweedfs(seaweedfs, HSDS_BUCKET).start()
    try:
        server.make_home_folders()
        yield server
    finally:
        server.stop()
