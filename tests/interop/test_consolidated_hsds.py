"""The consolidated metadata object with the real HSDS: HSDS serves a domain that has one,
and after HSDS changes the domain h5dask finds the summary stale and reads the objects
as they are."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request

import numpy as np
import pytest
import xarray as xr
from interop_compare import fresh_name

import h5dask
from h5dask.format import consolidated
from h5dask.storage import open_location
from h5dask.storage.sync import sync
from h5dask.xarray.backend import H5CloudStore

h5pyd = pytest.importorskip("h5pyd")

pytestmark = pytest.mark.hsds


def _hsds_put_attribute(server, domain: str, obj_id: str, name: str, text: str) -> None:
    kwargs = server.h5pyd_kwargs()
    body = json.dumps({"type": {"class": "H5T_STRING", "charSet": "H5T_CSET_UTF8",
                                "length": "H5T_VARIABLE", "strPad": "H5T_STR_NULLTERM"},
                       "shape": "H5S_SCALAR", "value": text}).encode()
    query = urllib.parse.urlencode({"domain": domain})
    request = urllib.request.Request(
        f"{kwargs['endpoint']}/datasets/{obj_id}/attributes/{name}?{query}", data=body,
        method="PUT", headers={"Content-Type": "application/json"})
    token = base64.b64encode(f"{kwargs['username']}:{kwargs['password']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as resp:
        assert resp.status in (200, 201)


def test_hsds_serves_a_domain_with_a_consolidated_object_and_h5dask_sees_its_changes(
        hsds_s3, storage_options):
    server = hsds_s3
    domain = f"/home/{server.username}/{fresh_name('consolidated')}"
    url = f"s3://{server.bucket}{domain}"
    ds = xr.Dataset({"t": (("time", "x"), np.arange(12.0).reshape(4, 3), {"units": "K"})},
                    coords={"time": np.arange(4.0), "x": [10.0, 20.0, 30.0]})
    h5dask.to_h5cloud(ds, url, storage_options=storage_options)
    location = open_location(url, storage_options)
    blob = sync(location.store.get(f"{location.domain}/{consolidated.NAME}"))
    # with the objects' JSON, checked by one LIST of their ETags (see test_open_listing)
    assert blob is not None and json.loads(blob)["bodies"]
    assert H5CloudStore.open(url, storage_options=storage_options).session \
        .consolidated_state == "used"

    # HSDS serves the domain as it is, the extra object notwithstanding
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        np.testing.assert_array_equal(f["t"][...], ds["t"].values)
        np.testing.assert_array_equal(f["time"][...], ds["time"].values)
    folder = h5pyd.Folder(f"/home/{server.username}/", **server.h5pyd_kwargs())
    assert domain.rsplit("/", 1)[1] in list(folder)

    # HSDS changes the domain (its REST API: h5pyd 1.0 cannot reopen a domain whose root
    # group has attributes for writing); it knows nothing of the summary
    with h5dask.File(url, storage_options=storage_options) as f:
        dataset_id = f["t"].id
    _hsds_put_attribute(server, domain, dataset_id, "comment", "changed by HSDS")
    server.wait_for_keys(domain=domain, quiet=1.5)

    h5dask.reset_stats()
    store = H5CloudStore.open(url, storage_options=storage_options)
    assert h5dask.stats()["metadata"]["list_requests"] == 1  # HSDS's new ETag caught it
    assert store.session.consolidated_state == "stale"
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    assert got["t"].attrs["comment"] == "changed by HSDS"  # as it is, not as summarised
    np.testing.assert_array_equal(got["t"].values, ds["t"].values)
