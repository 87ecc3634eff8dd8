"""What PyActiveStorage's own tests and examples do, against our server and SeaweedFS.

Their S3 tests (tests/test_real_s3*.py in NCAS-CMS/PyActiveStorage) run ``Active`` on
netCDF files in a bucket with the Reductionist URL given with a trailing slash, so the
client posts to ``//v2/min/``, which Reductionist accepts (it trims the slashes) and
our server answered 404. ``Active`` posts every chunk at once from 30 threads and
gives up on a 503; Reductionist queues what it cannot start, our server answered 503
beyond its 8 slots. Selections follow NumPy: Reductionist clamps out-of-range starts
and ends where our server answered 400.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
from activestorage.active import Active
from test_active_safety import post

SHAPE = (10, 12, 14)
CHUNKS = (3, 4, 5)
FILL = -999.0
#: a selection across chunk edges, as PyActiveStorage's tests slice ([0:2, 4:6, 7:9] ...)
INDEX = (slice(1, 9), slice(2, 11), slice(3, 13))


def write_netcdf(path: Path, endian: str) -> np.ma.MaskedArray:
    """A chunked, zlib-compressed, shuffled float32 variable ``data`` with a _FillValue
    (PyActiveStorage's dummy data in its own words); its masked values."""
    values = np.arange(np.prod(SHAPE), dtype="f4").reshape(SHAPE) / 7 - 100
    values[2:5, 3, 4:12] = FILL  # across chunk edges, inside the selection
    values[1, 2, 3] = FILL  # the selection's first element
    with netCDF4.Dataset(path, "w") as nc:
        for name, n in zip("tyx", SHAPE):
            nc.createDimension(name, n)
        dtype = (">" if endian == "big" else "<") + "f4"
        var = nc.createVariable("data", dtype, ("t", "y", "x"), zlib=True, shuffle=True,
                                chunksizes=CHUNKS, endian=endian, fill_value=FILL)
        var[:] = values
    return np.ma.masked_equal(values, FILL)


@pytest.fixture(scope="module", params=["little", "big"])
def netcdf_object(request: Any, active_store: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ma.MaskedArray]:
    """The netCDF file uploaded to SeaweedFS: its ``bucket/key`` path and its values."""
    path = tmp_path_factory.mktemp("pyactivestorage") / f"data_{request.param}.nc"
    values = write_netcdf(path, request.param)
    key = f"pyactivestorage/{path.name}"
    active_store.put(key, path.read_bytes())
    return f"{active_store.bucket}/{key}", values


@pytest.mark.parametrize("url_end", ["", "/"])
@pytest.mark.parametrize("method", ["min", "max", "mean", "sum"])
def test_active_reduces_every_chunk_on_the_server(
    active_server: Any, active_store: Any, netcdf_object: Any, method: str, url_end: str
) -> None:
    """PyActiveStorage's test_real_s3.py way: credentials in ``storage_options``,
    ``active_storage_url`` (there with a trailing slash), the chunk reductions on the
    server. Its 30 threads post the 27 chunks at once to a server with 4 slots: they
    wait for a slot (PyActiveStorage gives up on a 503)."""
    uri, values = netcdf_object
    storage_options = {
        "key": active_store.access_key,
        "secret": active_store.secret_key,
        "client_kwargs": {"endpoint_url": active_store.endpoint},
    }
    active = Active(uri, "data", interface_type="s3", storage_options=storage_options,
                    active_storage_url=active_server.url + url_end)
    active._version = 2  # Reductionist, as their S3 tests set it
    active.method = method
    got = active[INDEX]
    want = getattr(np.ma, method)(values[INDEX])
    assert float(np.ma.getdata(got).reshape(-1)[0]) == pytest.approx(float(want), rel=1e-6)
    if method in ("min", "max"):  # extremes are exact
        assert np.float32(np.ma.getdata(got).reshape(-1)[0]) == np.float32(want)


@pytest.fixture(scope="module")
def int_object(put_object: Any) -> str:
    return put_object("pyactivestorage/a.bin", np.arange(24, dtype="<i4").tobytes())


def int_body(url: str, **fields: Any) -> dict[str, Any]:
    return {"interface_type": "s3", "url": url, "dtype": "int32", "byte_order": "little",
            "shape": [2, 3, 4], **fields}


@pytest.mark.parametrize("path", ["//v2/sum/", "/v2/sum//", "///v2/sum", "//v2/sum"])
def test_extra_leading_and_trailing_slashes_are_ignored(
    active_server: Any, active_store: Any, int_object: str, path: str
) -> None:
    creds = (active_store.access_key, active_store.secret_key)
    status, reply = post(active_server, "sum", int_body(int_object), creds, path=path)
    assert status == 200, reply
    assert np.frombuffer(reply["bytes"], reply["dtype"]).tolist() == [276]


def test_slashes_inside_the_path_are_not_ignored(
    active_server: Any, active_store: Any, int_object: str
) -> None:
    """Reductionist trims only the ends of the path: ``/v2//sum`` is no route there."""
    creds = (active_store.access_key, active_store.secret_key)
    status, reply = post(active_server, "sum", int_body(int_object), creds, path="/v2//sum")
    assert status == 404 and "error" in reply


@pytest.mark.parametrize("selection", [
    [[0, 2, 1], [0, 3, 1], [0, 10, 1]],  # end past the length: to the end
    [[-5, 2, 1], [1, 3, 1], [-10, 10, 2]],  # starts before -length: from the start
    [[0, 2, 1], [0, 3, 1], [9, -10, -1]],  # backwards from past the end to before it
    [[5, 9, 1], [0, 3, 1], [0, 4, 1]],  # start past the end: empty
    [[1, 0, 1], [0, 3, 1], [0, 4, 1]],  # end before start: empty
])
@pytest.mark.parametrize("op", ["select", "sum", "count", "min", "max"])
def test_out_of_range_selections_are_clamped_as_numpy_does(
    active_server: Any, active_store: Any, int_object: str, selection: list, op: str
) -> None:
    creds = (active_store.access_key, active_store.secret_key)
    status, reply = post(active_server, op, int_body(int_object, selection=selection), creds)
    assert status == 200, reply
    want = np.arange(24, dtype="i4").reshape(2, 3, 4)[tuple(slice(*s) for s in selection)]
    got = np.frombuffer(reply["bytes"], reply["dtype"])
    assert reply["count"] == [want.size]
    if op == "select":
        assert reply["shape"] == list(want.shape) and got.tolist() == want.ravel().tolist()
    elif op == "count":
        assert got.tolist() == [want.size]
    elif op == "sum":
        assert got.tolist() == [int(want.sum())]
    elif want.size:  # an empty selection answers the fold's start value, with count 0
        assert got.tolist() == [int(getattr(want, op)())]
