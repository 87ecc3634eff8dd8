"""Ordinary xarray reductions pushed down to the active-storage server."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.active.pushdown import ActiveStorageError, ActiveStorageWarning

OPS = ["sum", "min", "max", "mean", "count"]


def _data():
    rng = np.random.default_rng(7)
    v = rng.normal(280, 10, size=(12, 20, 30)).astype("f4")
    v[0, :3, :4] = np.nan  # missing values (encoded as _FillValue)
    packed = np.round(rng.normal(0, 1000, size=(12, 20, 30))).astype("i4")
    packed[1, 5, 5] = -9999  # the fill value
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), v, {"units": "K"}),
         "packed": (("time", "lat", "lon"), packed,
                    # a power-of-two scale: sums and means of packed integers are
                    # pushed down only where exact (a scale of 0.01 is left to dask:
                    # test_pushdown_exact.py)
                    {"scale_factor": 2.0**-7, "add_offset": 5.0, "_FillValue": -9999})},
        coords={"time": np.arange(12.0), "lat": np.linspace(-90, 90, 20),
                "lon": np.linspace(0, 354, 30)},
    )


@pytest.fixture(params=["raw", "gzip", "zstd", "lz4"])
def domain(request, s3_bucket_url, storage_options):
    """The data stored raw, or compressed with shuffle (HSDS stores every compressor as a
    Blosc frame, shuffle inside it)."""
    url = f"{s3_bucket_url}/{request.param}.h5"
    comp = ({} if request.param == "raw"
            else {"compression": request.param, "shuffle": True})
    enc = {"tas": {"chunks": (4, 10, 10), **comp}, "packed": {"chunks": (6, 10, 15), **comp}}
    h5dask.to_h5cloud(_data(), url, encoding=enc, storage_options=storage_options)
    return url


def _open(url, storage_options, server=None, **kw):
    extra = {"active_storage_url": server.url} if server else {}
    return xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=storage_options,
                           **extra, **kw)


def _reduce(da, op, dim):
    return getattr(da, op)(dim=dim)


@pytest.mark.parametrize("var", ["tas", "packed"])
@pytest.mark.parametrize("op", OPS)
def test_pushed_down_equals_local(domain, storage_options, pushdown_server, op, var):
    local = _open(domain, storage_options)[var]
    remote = _open(domain, storage_options, pushdown_server)[var]
    sliced = {"lon": slice(3, 22), "time": slice(1, 11)}
    for dim, sel in ((None, {}), ("lat", {}), ("time", sliced)):
        expected = _reduce(local.isel(sel), op, dim).compute(scheduler="sync")
        h5dask.reset_stats()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ActiveStorageWarning)
            got = _reduce(remote.isel(sel), op, dim).compute(scheduler="sync")
        io = h5dask.stats()
        assert io["chunk"]["read_requests"] == 0, (op, dim)
        assert io["active"]["read_requests"] > 0
        xr.testing.assert_allclose(got, expected, rtol=1e-5)


def test_client_receives_a_tiny_fraction_of_the_bytes(s3_bucket_url, storage_options,
                                                      pushdown_server):
    url = f"{s3_bucket_url}/big.h5"
    data = np.random.default_rng(0).random((64, 256, 256), dtype="f4")  # 16 MiB
    h5dask.to_h5cloud(xr.Dataset({"v": (("t", "y", "x"), data)}), url,
                      encoding={"v": {"chunks": (8, 128, 128)}},
                      storage_options=storage_options)
    h5dask.reset_stats()
    local = float(_open(url, storage_options)["v"].mean().compute(scheduler="sync"))
    local_bytes = h5dask.stats()["total"]["read_bytes"]
    h5dask.reset_stats()
    remote = float(_open(url, storage_options, pushdown_server)["v"].mean().compute(
        scheduler="sync"))
    remote_bytes = h5dask.stats()["total"]["read_bytes"]
    assert remote == pytest.approx(local, rel=1e-6)
    assert h5dask.stats()["active"]["read_requests"] == 32  # one per chunk object
    assert remote_bytes < 0.001 * local_bytes, (remote_bytes, local_bytes)


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_requests_of_queued_tasks_are_sent_ahead_once(s3_bucket_url, storage_options,
                                                      pushdown_server, scheduler):
    """Under latency, the requests of the tasks queued next go out before they run (like
    chunk read-ahead): the same answer, one request per chunk object, none left over."""
    from h5dask.active import pushdown

    url = f"{s3_bucket_url}/ahead.h5"
    data = np.random.default_rng(1).random((32, 20, 30), dtype="f4")
    h5dask.to_h5cloud(xr.Dataset({"v": (("t", "y", "x"), data)}), url,
                      encoding={"v": {"chunks": (2, 20, 30)}}, storage_options=storage_options)
    before = dict(pushdown.ahead_counts)
    h5dask.reset_stats()
    got = float(_open(url, storage_options, pushdown_server)["v"].mean().compute(
        scheduler=scheduler))
    assert got == pytest.approx(float(data.astype("f8").mean()), rel=1e-6)
    assert h5dask.stats()["active"]["read_requests"] == 16  # one per chunk object
    sent = pushdown.ahead_counts["sent"] - before["sent"]
    assert sent > 0 and pushdown.ahead_counts["used"] - before["used"] == sent
    assert not pushdown._ahead  # nothing left behind


def test_missing_chunks_reduce_like_local(s3_bucket_url, storage_options, pushdown_server):
    url = f"{s3_bucket_url}/sparse.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        d = f.create_dataset("v", shape=(20, 20), dtype="<f8", chunks=(10, 10), fillvalue=2.5)
        d[:10, :] = np.arange(200.0).reshape(10, 20)
    for op in OPS:
        local = getattr(_open(url, storage_options)["v"], op)().compute(scheduler="sync")
        remote = getattr(_open(url, storage_options, pushdown_server)["v"], op)().compute(
            scheduler="sync")
        xr.testing.assert_allclose(remote, local)


def test_unreachable_server_warns_once_and_computes_locally(domain, storage_options):
    class Dead:
        url = "http://127.0.0.1:9"  # discard port: nothing listens

    local = float(_open(domain, storage_options)["tas"].sum().compute(scheduler="sync"))
    with pytest.warns(ActiveStorageWarning, match="cannot reach") as record:
        got = float(_open(domain, storage_options, Dead)["tas"].sum().compute(scheduler="sync"))
    assert got == pytest.approx(local, rel=1e-6)
    assert len([w for w in record if issubclass(w.category, ActiveStorageWarning)]) == 1
    with pytest.raises(ActiveStorageError, match="cannot reach"):
        _open(domain, storage_options, Dead, active_storage="require")["tas"].sum().compute(
            scheduler="sync")


def test_environment_variable_enables_pushdown(domain, storage_options, pushdown_server,
                                               monkeypatch):
    monkeypatch.setenv("H5DASK_ACTIVE_STORAGE_URL", pushdown_server.url)
    h5dask.reset_stats()
    _open(domain, storage_options)["tas"].max().compute(scheduler="sync")
    assert h5dask.stats()["active"]["read_requests"] > 0


def test_unsupported_dtype_falls_back_with_one_warning(s3_bucket_url, storage_options,
                                                       pushdown_server):
    url = f"{s3_bucket_url}/i2.h5"
    h5dask.to_h5cloud(xr.Dataset({"s": (("x",), np.arange(100, dtype="i2"))}), url,
                      encoding={"s": {"chunks": (10,)}}, storage_options=storage_options)
    with pytest.warns(ActiveStorageWarning, match="int16"):
        got = int(_open(url, storage_options, pushdown_server)["s"].max().compute(
            scheduler="sync"))
    assert got == 99


def test_on_a_distributed_cluster(domain, storage_options, pushdown_server, cluster_client):
    client = cluster_client
    local = _open(domain, storage_options)["tas"]
    remote = _open(domain, storage_options, pushdown_server)["tas"]
    client.run(h5dask.reset_stats)
    for op in OPS:
        got = getattr(remote, op)("lat").compute()
        xr.testing.assert_allclose(got, getattr(local, op)("lat").compute(), rtol=1e-5)
    stats = client.run(h5dask.stats)
    assert sum(s["active"]["read_requests"] for s in stats.values()) > 0
    assert dask.config.get("array_optimize") is not None


def test_linked_dataset_with_unstored_chunks_reduces_them_locally(
        tmp_path, seaweedfs, s3_bucket_url, storage_options, pushdown_server):
    """A linked chunk the source file never wrote has no byte range to send to the server:
    its block is reduced locally (from the fill value), the others on the server."""
    from urllib.parse import urlsplit

    import h5py

    from h5dask.ingest import load_file

    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        v = f.create_dataset("v", shape=(16, 8), chunks=(4, 8), dtype="f4", fillvalue=0.0)
        v[0:4] = 1.0
        v[8:12] = 3.0  # chunks 1 and 3 are never written
    bucket, prefix = urlsplit(s3_bucket_url).netloc, urlsplit(s3_bucket_url).path.strip("/")
    seaweedfs.s3_client().put_object(Bucket=bucket, Key=f"{prefix}/sparse.h5",
                                     Body=path.read_bytes())
    url = f"{s3_bucket_url}/linked.h5"
    load_file(f"s3://{bucket}/{prefix}/sparse.h5", url, link=True,
              storage_options=storage_options, progress=False)
    remote = _open(url, storage_options, pushdown_server, active_storage="require")["v"]
    h5dask.reset_stats()
    assert float(remote.sum().compute(scheduler="sync")) == 4 * 8 * (1.0 + 3.0)
    assert h5dask.stats()["active"]["read_requests"] > 0  # the stored chunks, remotely
    assert float(remote.mean().compute(scheduler="sync")) == 4 * 8 * 4.0 / (16 * 8)
