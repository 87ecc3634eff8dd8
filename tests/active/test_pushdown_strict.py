"""Push-down against a strict Reductionist, which refuses h5dask's extension fields
(serde's deny_unknown_fields: a 400 "request data is not valid" whose ``caused_by``
names the field). A stub server answers so: its answers are not the point, what the
client does with a refusal is."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xarray as xr
from aiohttp import web
from servers.active import free_port, serve_in_thread

import h5dask
from h5dask.active.pushdown import ActiveStorageError, ActiveStorageWarning

#: what Reductionist's request type accepts (its src/models.rs)
REDUCTIONIST_FIELDS = {"interface_type", "url", "dtype", "byte_order", "offset", "size",
                       "shape", "order", "selection", "compression", "filters", "missing",
                       "axis"}


class StrictStub:
    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        async def operation(request: web.Request) -> web.Response:
            body = await request.json()
            self.bodies.append(body)
            unknown = sorted(set(body) - REDUCTIONIST_FIELDS)
            if unknown:
                return web.json_response({"error": {
                    "message": "request data is not valid",
                    "caused_by": ["Failed to deserialize the JSON body into the target type",
                                  f"unknown field `{unknown[0]}`, expected one of `url`"]}},
                    status=400)
            return web.json_response({"error": {"message": "stub"}}, status=500)

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_post("/v2/{op}/", operation)
        app.router.add_get("/healthz", healthz)
        return app


@pytest.fixture(scope="module")
def strict_server() -> Iterator[StrictStub]:
    stub = StrictStub()
    with serve_in_thread(stub.app(), stub.port, "strict-stub"):
        yield stub


def _open(url: str, storage_options: dict, server: StrictStub) -> xr.DataArray:
    return xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=storage_options,
                           active_storage_url=server.url, active_storage="require")["v"]


def test_int32_sums_refused_by_a_strict_reductionist_are_reduced_locally(
        s3_bucket_url, storage_options, strict_server):
    """An int32 mean under "require" raised ActiveStorageError: the server refused the
    sum_int64 field. That means it cannot sum these exactly, not that it failed: the
    blocks are reduced locally, and the server is not asked again."""
    data = np.arange(100, dtype="i4") * 1000
    url = f"{s3_bucket_url}/strict-i4.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("v", data=data, chunks=(25,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveStorageWarning)
        v = _open(url, storage_options, strict_server)
        assert v.mean().compute(scheduler="sync").item() == np.mean(data)
        asked = len(strict_server.bodies)
        assert 1 <= asked <= 4 and all(b.get("sum_int64") for b in strict_server.bodies)
        # remembered: no request for the next int32 sums to this server
        assert v.sum().compute(scheduler="sync").item() == data.sum()
        assert v.mean().compute(scheduler="sync").item() == np.mean(data)
    assert len(strict_server.bodies) == asked


def test_errors_name_the_field_the_server_refused(s3_bucket_url, storage_options,
                                                  strict_server):
    """The error said only "HTTP 400: request data is not valid"; the server's
    caused_by says which field it refused."""
    url = f"{s3_bucket_url}/strict-f4.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("v", data=np.arange(10, dtype="f4"), chunks=(5,))
    with pytest.raises(ActiveStorageError, match="unknown field `skip_nan`"):
        _open(url, storage_options, strict_server).sum().compute(scheduler="sync")
