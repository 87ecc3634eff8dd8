"""Every error path answers with the status the real Reductionist gives for it and a JSON
error body of its shape, ``{"error": {"message": str, "caused_by": [str, ...]}}``.

The statuses are Reductionist's own (stackhpc/reductionist-rs 0.13.1, ``src/error.rs``:
``ErrorResponse::from``; ``src/app.rs``; ``src/chunk_downloader_http.rs``):

* JsonRejection (a body not declared JSON, not valid JSON, over the size limit) and
  validation errors: 400; InsufficientMemory (an object over the memory limit): 400;
* S3 GetObject: NoSuchKey and NoSuchBucket 400; InvalidAccessKeyId,
  SignatureDoesNotMatch and AccessDenied 401; any other S3 error code (InvalidRange, a
  5xx, ...) and dispatch/timeout failures 500;
* an http(s) upstream answering anything but 200/206: HTTPRequestError, 400;
* an unknown operation: 404.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from test_active_safety import body, post

from h5dask.active.client import object_missing

S3_ERROR = "error retrieving object from S3 storage"
HTTP_ERROR = "HTTP request error"


@pytest.fixture(scope="module")
def creds(active_store: Any) -> tuple[str, str]:
    return active_store.access_key, active_store.secret_key


@pytest.fixture(scope="module")
def data_url(put_object: Any) -> str:
    return put_object("status/int32.bin", np.arange(24, dtype="<i4").tobytes())


def assert_reductionist_error(status: int, reply: Any, want: int, message_start: str) -> None:
    """``reply`` is Reductionist's error body, with ``want`` and a message starting so."""
    assert status == want, reply
    assert set(reply) == {"error"}, reply
    err = reply["error"]
    assert set(err) <= {"message", "caused_by"} and isinstance(err["message"], str), reply
    assert all(isinstance(c, str) for c in err.get("caused_by", [])), reply
    assert err["message"].startswith(message_start), reply


# -- S3 upstream -----------------------------------------------------------------------------


def test_missing_object_is_400_no_such_key(active_server: Any, active_store: Any,
                                           creds: Any) -> None:
    url = active_store.url("status/does-not-exist.bin")
    status, reply = post(active_server, "sum", body(url), creds)
    assert_reductionist_error(status, reply, 400, S3_ERROR)
    assert reply["error"]["caused_by"] == ["NoSuchKey"] and url in reply["error"]["message"]
    assert object_missing(status, json.dumps(reply).encode())


def test_missing_bucket_is_400_and_not_a_missing_chunk(active_server: Any, active_store: Any,
                                                       creds: Any) -> None:
    """A missing bucket is no missing chunk: the client must not read fill values."""
    url = f"{active_store.endpoint}/no-such-bucket-h5dask/x.bin"
    status, reply = post(active_server, "sum", body(url), creds)
    assert_reductionist_error(status, reply, 400, S3_ERROR)
    assert reply["error"]["caused_by"] == ["NoSuchBucket"], reply
    assert not object_missing(status, json.dumps(reply).encode())


@pytest.mark.parametrize("who", ["wrong secret", "unknown key", "anonymous"])
def test_refused_credentials_and_access_denied_are_401(active_server: Any, data_url: str,
                                                       creds: Any, who: str) -> None:
    auth = {"wrong secret": (creds[0], "wrong"), "unknown key": ("no-such-key", "x"),
            "anonymous": None}[who]
    status, reply = post(active_server, "sum", body(data_url), auth)
    assert_reductionist_error(status, reply, 401, S3_ERROR)


def test_other_s3_errors_are_500(active_server: Any, data_url: str, creds: Any,
                                 upstream_stub: Any) -> None:
    status, reply = post(active_server, "sum", body(data_url, offset=1000), creds)
    assert_reductionist_error(status, reply, 500, S3_ERROR)  # InvalidRange
    # the stub's /error/x as an s3 URL (bucket "error"): a 500 from the store
    status, reply = post(active_server, "sum", body(upstream_stub.url("error")))
    assert_reductionist_error(status, reply, 500, S3_ERROR)


# -- http upstream -----------------------------------------------------------------------


@pytest.mark.parametrize("route", ["obj", "auth", "error", "redirect", "badrange"])
def test_failed_http_fetches_are_400(active_server: Any, upstream_stub: Any, data_url: str,
                                     route: str) -> None:
    """404, 401, 500, a redirect, a wrong Content-Range: all HTTPRequestError, 400."""
    upstream_stub.objects["st"] = bytes(16)
    upstream_stub.redirect_to = data_url
    name = "missing" if route == "obj" else "st"
    fields = {"interface_type": "http", "offset": 4, "size": 8}
    status, reply = post(active_server, "sum", body(upstream_stub.url(route, name), **fields))
    assert_reductionist_error(status, reply, 400, HTTP_ERROR)


# -- the request itself ----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_declared_json_is_400(active_server: Any, data_url: str, creds: Any,
                                         content_type: str) -> None:
    status, reply = post(active_server, "sum", body(data_url), creds,
                         headers={"Content-Type": content_type})
    assert_reductionist_error(status, reply, 400, "request data is not valid")


def test_any_json_media_type_is_accepted(active_server: Any, data_url: str,
                                         creds: Any) -> None:
    """axum accepts ``application/*+json`` as JSON, so Reductionist does."""
    status, reply = post(active_server, "sum", body(data_url), creds,
                         headers={"Content-Type": "application/vnd.api+json"})
    assert status == 200, reply
    assert np.frombuffer(reply["bytes"], reply["dtype"]).tolist() == [276]


def test_a_body_too_large_is_400(active_server: Any, data_url: str) -> None:
    huge = body(data_url, missing={"missing_values": list(range(300_000))})
    status, reply = post(active_server, "sum", huge)
    assert_reductionist_error(status, reply, 400, "request data is not valid")


def test_an_object_too_large_is_400(active_server: Any, put_object: Any, creds: Any) -> None:
    url = put_object("status/big.bin", bytes(active_server.max_object_size + 8))
    status, reply = post(active_server, "count", body(url), creds)
    assert_reductionist_error(status, reply, 400, "Insufficient memory to process request")


def test_unknown_operation_is_404(active_server: Any, data_url: str) -> None:
    status, reply = post(active_server, "mean", body(data_url))
    assert_reductionist_error(status, reply, 404, "unsupported operation mean")


def test_validation_errors_are_400(active_server: Any, data_url: str) -> None:
    status, reply = post(active_server, "sum", body(data_url, dtype="int8"))
    assert_reductionist_error(status, reply, 400, "request data is not valid")


# -- the client ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "payload", "missing"), [
    (400, {"error": {"message": S3_ERROR, "caused_by": ["service error", "NoSuchKey"]}}, True),
    (400, {"error": {"message": S3_ERROR,
                     "caused_by": ["NoSuchKey: The specified key does not exist."]}}, True),
    (400, {"error": {"message": S3_ERROR, "caused_by": ["NoSuchBucket"]}}, False),
    (400, {"error": {"message": "request data is not valid: NoSuchKey"}}, False),
    (404, {"error": {"message": "object not found: http://h/b/k"}}, True),  # older h5dask
    (404, {"error": {"message": "unsupported operation sum"}}, False),
    (500, {"error": {"message": S3_ERROR, "caused_by": ["NoSuchKey"]}}, False),
])
def test_the_client_knows_a_missing_chunk(status: int, payload: Any, missing: bool) -> None:
    """The client reduces a missing chunk object locally (its fill value); it recognised
    only h5dask's old 404, so against Reductionist (400, NoSuchKey) every sparse variable
    fell back with a warning, or failed with ``active_storage="require"``."""
    assert object_missing(status, json.dumps(payload).encode()) is missing
    assert not object_missing(400, b"not json")


def test_sparse_variables_push_down_with_missing_chunk_objects(
        s3_bucket_url: str, storage_options: dict, pushdown_server: Any) -> None:
    """Chunk objects never written are missing (HSDS's fill value): the server's 400
    NoSuchKey makes the client reduce them locally, and the rest on the server."""
    import xarray as xr

    import h5dask

    url = f"{s3_bucket_url}/sparse-status.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        v = f.create_dataset("v", shape=(16,), chunks=(4,), dtype="i4", fillvalue=0)
        v[0:4] = np.arange(4, dtype="i4") + 1
        v[8:12] = 7  # chunks 1 and 3 are never written
    ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=storage_options,
                         active_storage_url=pushdown_server.url, active_storage="require")
    h5dask.reset_stats()
    assert int(ds["v"].sum().compute(scheduler="sync")) == 10 + 28
    assert h5dask.stats()["active"]["read_requests"] > 0
