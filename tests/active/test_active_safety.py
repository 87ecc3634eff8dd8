"""One test per safety rule of the active-storage server: the bad request is sent over
HTTP and the status and the JSON error body (which names the field) are checked."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import cbor2
import numcodecs
import numpy as np
import pytest
from servers.active import start_active_server, stop_process

#: how long the upstream stub's /slow route takes to answer (conftest.py)
SLOW_SECONDS = 1.5
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(
    server: Any,
    op: str,
    body: dict[str, Any] | bytes,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    path: str | None = None,
) -> tuple[int, Any]:
    """POST to the server; return (status, decoded JSON error or CBOR reply)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        hdrs["Authorization"] = f"Basic {token}"
    url = server.url + (path or f"/v2/{op}/")
    req = urllib.request.Request(url, data=data, headers=hdrs, method="POST")
    try:
        with _OPENER.open(req, timeout=30) as resp:
            return resp.status, cbor2.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        assert err.headers.get("Content-Type", "").startswith("application/json"), raw
        return err.code, json.loads(raw)


def error_text(reply: Any) -> str:
    """The error message and causes, for substring checks."""
    err = reply["error"]
    assert isinstance(err["message"], str)
    return " ".join([err["message"], *err.get("caused_by", [])])


@pytest.fixture(scope="module")
def data_url(put_object: Any) -> str:
    """An int32 object of 24 elements (shape 2x3x4) in SeaweedFS."""
    return put_object("safety/int32.bin", np.arange(24, dtype="<i4").tobytes())


@pytest.fixture(scope="module")
def creds(active_store: Any) -> tuple[str, str]:
    return active_store.access_key, active_store.secret_key


def body(url: str, **fields: Any) -> dict[str, Any]:
    base = {"interface_type": "s3", "url": url, "dtype": "int32", "byte_order": "little"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def assert_field_error(status: int, reply: Any, want_status: int, field: str) -> None:
    assert status == want_status, reply
    assert f"'{field}'" in reply["error"]["message"], reply


# -- a good request first ----------------------------------------------------------------


def test_healthz(active_server: Any) -> None:
    with _OPENER.open(active_server.url + "/healthz", timeout=10) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["status"] == "ok"


@pytest.mark.parametrize("path", ["/v2/sum/", "/v2/sum"])
def test_good_request_with_and_without_trailing_slash(
    active_server: Any, data_url: str, creds: Any, path: str
) -> None:
    status, reply = post(active_server, "sum", body(data_url, shape=[2, 3, 4]), creds, path=path)
    assert status == 200, reply
    assert reply["dtype"] == "int32" and reply["shape"] == [] and reply["count"] == [24]
    assert reply["byte_order"] == sys.byteorder
    assert np.frombuffer(reply["bytes"], dtype="int32").tolist() == [276]


def test_reply_options_as_bytes(active_server: Any, data_url: str, creds: Any) -> None:
    fields = {"shape": [2, 3, 4], "axis": 2}
    fields.update(option_shape_as_bytes=True, option_count_as_bytes=True)
    status, reply = post(active_server, "max", body(data_url, **fields), creds)
    assert status == 200, reply
    assert reply["shape"] == [] and reply["count"] == []
    assert np.frombuffer(reply["shape_as_bytes"], dtype=np.uint64).tolist() == [2, 3]
    assert np.frombuffer(reply["count_as_bytes"], dtype=np.int64).tolist() == [4] * 6
    assert np.frombuffer(reply["bytes"], "int32").tolist() == list(range(3, 24, 4))


# -- request validation (400 naming the field) -----------------------------------------------


def test_bad_dtype(active_server: Any, data_url: str, creds: Any) -> None:
    status, reply = post(active_server, "sum", body(data_url, dtype="int8"), creds)
    assert_field_error(status, reply, 400, "dtype")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"shape": [5, 5], "size": 96}, "shape"),  # 25 * 4 != 96
        ({"shape": [2, 3, 4], "size": 96, "offset": 4}, None),  # consistent: fine
        ({"size": 10}, "size"),  # not a multiple of 4
        ({"shape": [0, 3]}, "shape"),
        ({"shape": []}, "shape"),
        ({"shape": [2, 3]}, "shape"),  # whole object is 96 bytes, not 24
    ],
)
def test_shape_must_match_size(
    active_server: Any, data_url: str, creds: Any, fields: dict[str, Any], field: str | None
) -> None:
    status, reply = post(active_server, "count", body(data_url, **fields), creds)
    if field is None:
        assert status == 400 and "'size'" in reply["error"]["message"]  # runs off the end
    else:
        assert_field_error(status, reply, 400, field)


@pytest.mark.parametrize(
    "selection",
    [
        [[0, 2, 1], [0, 3, 1]],  # one dimension short
        [[0, 2, 1], [0, 3, 1], [0, 4, 0]],  # zero stride
        [[0, 2, 1], [0, 3, 1], [0, 4.5, 1]],  # not an integer
        [[0, 2], [0, 3, 1], [0, 4, 1]],  # not a triple
        [[0, 2, 1], [0, 3, 1], [0, 2**63, 1]],  # beyond 64 bits (Reductionist's isize)
        # out-of-range starts and ends are clamped: see test_pyactivestorage.py
    ],
)
def test_bad_selection(
    active_server: Any, data_url: str, creds: Any, selection: Any
) -> None:
    fields = {"shape": [2, 3, 4], "selection": selection}
    status, reply = post(active_server, "sum", body(data_url, **fields), creds)
    assert_field_error(status, reply, 400, "selection")


def test_selection_needs_shape(active_server: Any, data_url: str, creds: Any) -> None:
    status, reply = post(active_server, "sum", body(data_url, selection=[[0, 1, 1]]), creds)
    assert_field_error(status, reply, 400, "selection")


@pytest.mark.parametrize(
    ("shape", "axis"),
    [([2, 3, 4], 3), ([2, 3, 4], -1), ([2, 3, 4], [0, 0]), ([2, 3, 4], [2, 1]), (None, 0)],
)
def test_axis_out_of_range(
    active_server: Any, data_url: str, creds: Any, shape: Any, axis: Any
) -> None:
    status, reply = post(active_server, "sum", body(data_url, shape=shape, axis=axis), creds)
    assert_field_error(status, reply, 400, "axis")


@pytest.mark.parametrize("compression", [{"id": "lz4"}, "gzip", {"id": "gzip", "level": 4}])
def test_unknown_compression(
    active_server: Any, data_url: str, creds: Any, compression: Any
) -> None:
    status, reply = post(active_server, "sum", body(data_url, compression=compression), creds)
    assert_field_error(status, reply, 400, "compression")


@pytest.mark.parametrize(
    "filters",
    [[{"id": "bitshuffle", "element_size": 4}], [{"id": "shuffle"}], {"id": "shuffle"}],
)
def test_unknown_filter(active_server: Any, data_url: str, creds: Any, filters: Any) -> None:
    status, reply = post(active_server, "sum", body(data_url, filters=filters), creds)
    assert_field_error(status, reply, 400, "filters")


@pytest.mark.parametrize(
    "raw", [b'{"url": ', b"[1, 2]", b'{"dtype": NaN}', b"\xff\xfe", b'{"a": 1, "a": 2}']
)
def test_malformed_json(active_server: Any, raw: bytes) -> None:
    status, reply = post(active_server, "sum", raw)
    assert status == 400, reply
    assert "JSON" in reply["error"]["message"] or "JSON object" in error_text(reply)


def test_body_too_large(active_server: Any, data_url: str) -> None:
    huge = body(data_url, missing={"missing_values": list(range(300_000))})
    status, reply = post(active_server, "sum", huge)
    assert status == 400, reply  # Reductionist: a JsonRejection
    assert "too large" in reply["error"]["message"]


@pytest.mark.parametrize("field", ["interface_type", "url", "dtype"])
def test_missing_required_field(active_server: Any, data_url: str, field: str) -> None:
    b = body(data_url)
    del b[field]
    status, reply = post(active_server, "sum", b)
    assert_field_error(status, reply, 400, field)


def test_unknown_field(active_server: Any, data_url: str) -> None:
    status, reply = post(active_server, "sum", body(data_url, chunk_cache=True))
    assert_field_error(status, reply, 400, "chunk_cache")


@pytest.mark.parametrize(
    ("dtype", "missing"),
    [
        ("int32", {"missing_value": 1.5}),  # float for an integer dtype
        ("uint32", {"missing_value": -1}),  # out of range
        ("int32", {"missing_value": 2**31}),
        ("float32", {"valid_min": 1e39}),  # not representable as float32
        ("int32", {"valid_range": [5, 1]}),  # min >= max
        ("int32", {"valid_min": 1, "valid_max": 5}),  # two kinds
        ("int32", {"fill_value": 1}),  # unknown kind
        ("int32", {"missing_values": 3}),  # not a list
    ],
)
def test_bad_missing(
    active_server: Any, data_url: str, creds: Any, dtype: str, missing: Any
) -> None:
    status, reply = post(active_server, "sum", body(data_url, dtype=dtype, missing=missing), creds)
    assert_field_error(status, reply, 400, "missing")


@pytest.mark.parametrize(
    "fields",
    [
        {"interface_type": "ftp"},
        {"byte_order": "native"},
        {"order": "K"},
        {"offset": -1},
        {"size": 0},
        {"option_count_as_bytes": "yes"},
    ],
)
def test_other_bad_fields(
    active_server: Any, data_url: str, creds: Any, fields: dict[str, Any]
) -> None:
    status, reply = post(active_server, "sum", body(data_url, **fields), creds)
    assert_field_error(status, reply, 400, next(iter(fields)))


@pytest.mark.parametrize("suffix", ["/bucketonly", "/", "/active-test/x?versionId=1"])
def test_s3_url_needs_bucket_and_key(
    active_server: Any, active_store: Any, creds: Any, suffix: str
) -> None:
    status, reply = post(active_server, "sum", body(active_store.endpoint + suffix), creds)
    assert_field_error(status, reply, 400, "url")


def test_bad_authorization_header(active_server: Any, data_url: str) -> None:
    for value in ("Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        status, reply = post(active_server, "sum", body(data_url), headers={"Authorization": value})
        assert status == 400, reply
        assert "Authorization" in reply["error"]["message"]


def test_other_authorization_schemes_are_anonymous(
    active_server: Any, put_object: Any, active_store: Any
) -> None:
    """Reductionist takes an optional Basic header: a Bearer token (for a proxy in front
    of it) is ignored, and the object is read anonymously; we refused it with a 400."""
    url = put_object("safety/bearer.bin", np.arange(4, dtype="<i4").tobytes())
    status, reply = post(active_server, "sum", body(url), headers={"Authorization": "Bearer x"})
    assert status == 401, reply  # the store refuses anonymous reads, as without a header
    assert reply["error"]["message"].startswith("error retrieving object from S3 storage")


def test_unknown_operation_and_method(active_server: Any, data_url: str) -> None:
    status, reply = post(active_server, "mean", body(data_url))
    assert status == 404 and "mean" in reply["error"]["message"]
    req = urllib.request.Request(active_server.url + "/v2/sum/", method="GET")
    with pytest.raises(urllib.error.HTTPError) as info:
        _OPENER.open(req, timeout=10)
    assert info.value.code == 405
    assert "error" in json.loads(info.value.read())


# -- upstream safety ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda u: u.replace("127.0.0.1", "localhost"),  # same machine, other host name
        lambda u: u.replace("http://", "https://"),  # other scheme
        lambda u: u.replace("127.0.0.1:", "127.0.0.2:"),  # other host
        lambda u: u.rsplit(":", 1)[0] + ":1/" + u.split("/", 3)[3],  # other port
        lambda u: u.replace("http://", "http://user:pw@"),  # user info
        lambda u: u.replace("http://127.0.0.1:", "http://evil.example@127.0.0.1:"),
    ],
)
def test_upstream_not_on_allow_list(
    active_server: Any, data_url: str, creds: Any, mutate: Any
) -> None:
    url = mutate(data_url)
    assert url != data_url
    status, reply = post(active_server, "sum", body(url), creds)
    assert_field_error(status, reply, 403, "url")
    assert "user:pw" not in json.dumps(reply) and "evil" not in json.dumps(reply)


def test_redirect_not_followed(
    active_server: Any, upstream_stub: Any, data_url: str, creds: Any
) -> None:
    upstream_stub.redirect_to = data_url  # even an allowed target is not followed
    url = upstream_stub.url("redirect")
    status, reply = post(active_server, "sum", body(url, interface_type="http"), creds)
    assert status == 400, reply  # Reductionist: any failed http fetch is a 400
    assert "redirect" in reply["error"]["message"]


def test_upstream_404_names_url(active_server: Any, active_store: Any, creds: Any) -> None:
    url = active_store.url("safety/does-not-exist.bin")
    status, reply = post(active_server, "sum", body(url), creds)
    assert status == 400, reply  # Reductionist: NoSuchKey is a 400
    assert url in reply["error"]["message"] and reply["error"]["caused_by"] == ["NoSuchKey"]


def test_upstream_bad_credentials(active_server: Any, data_url: str, creds: Any) -> None:
    status, reply = post(active_server, "sum", body(data_url), (creds[0], "wrong-secret"))
    assert status == 401, reply
    status, reply = post(active_server, "sum", body(data_url), ("no-such-key", "x"))
    assert status == 401, reply


def test_upstream_anonymous_denied(active_server: Any, data_url: str) -> None:
    status, reply = post(active_server, "sum", body(data_url))
    assert status == 401, reply  # Reductionist: S3's AccessDenied is a 401


def test_upstream_range_errors(active_server: Any, data_url: str, creds: Any) -> None:
    status, reply = post(active_server, "sum", body(data_url, offset=1000), creds)
    # Reductionist: S3's InvalidRange is an unhandled S3 error, a 500
    assert status == 500 and "offset 1000 is beyond the end" in reply["error"]["message"]
    status, reply = post(active_server, "sum", body(data_url, offset=88, size=16), creds)
    assert_field_error(status, reply, 400, "size")


def test_http_interface(active_server: Any, upstream_stub: Any) -> None:
    a = np.arange(10, dtype=">f8")
    upstream_stub.objects["f8"] = b"xxxx" + a.tobytes()
    fields = {"interface_type": "http", "dtype": "float64", "byte_order": "big"}
    fields.update(offset=4, size=80)
    for route in ("obj", "norange"):  # with and without Range support upstream
        status, reply = post(active_server, "sum", body(upstream_stub.url(route, "f8"), **fields))
        assert status == 200, reply
        assert np.frombuffer(reply["bytes"], "float64").tolist() == [45.0]
    status, reply = post(active_server, "sum", body(upstream_stub.url("auth", "f8"), **fields))
    assert status == 400, reply  # Reductionist: any failed http fetch is a 400
    auth = ("someone", "s3cret")
    status, reply = post(
        active_server, "sum", body(upstream_stub.url("auth", "f8"), **fields), auth
    )
    assert status == 200, reply
    assert upstream_stub.auth == "Basic " + base64.b64encode(b"someone:s3cret").decode()
    for route in ("error", "badrange"):  # upstream failure, wrong Content-Range
        status, reply = post(active_server, "sum", body(upstream_stub.url(route, "f8"), **fields))
        assert status == 400, reply


def test_no_cookies_shared_between_users(active_server: Any, upstream_stub: Any) -> None:
    """An http upstream that sets a session cookie after one user's Basic credentials:
    the server's shared session kept it and sent it with every later request, so another
    user, anonymous or with a Bearer token (read anonymously), read the first user's
    private object."""
    upstream_stub.objects["private"] = np.arange(8, dtype="<i4").tobytes()
    fields = {"interface_type": "http"}
    url = f"{upstream_stub.named_origin}/session/private"
    status, reply = post(active_server, "sum", body(url, **fields), ("alice", "pw"))
    assert status == 200, reply  # alice logged in: the upstream set its cookie
    for headers in ({}, {"Authorization": "Bearer some-proxy-token"}):
        status, reply = post(active_server, "sum", body(url, **fields), headers=headers)
        assert status == 400, reply  # the upstream's 401, as Reductionist answers it
        assert "status 401" in reply["error"]["message"]


# -- resource bounds -----------------------------------------------------------------------


def test_object_too_large(
    active_server: Any, put_object: Any, upstream_stub: Any, creds: Any
) -> None:
    n = active_server.max_object_size * 2
    url = put_object("safety/big.bin", bytes(n))
    for fields in ({}, {"size": n}, {"offset": 8}):  # whole object, big range, open range
        status, reply = post(active_server, "count", body(url, **fields), creds)
        assert status == 400, (fields, reply)  # Reductionist: InsufficientMemory
        assert "too large" in reply["error"]["message"]
    huge = body(upstream_stub.url("huge"), interface_type="http")  # no Content-Length
    status, reply = post(active_server, "count", huge)
    assert status == 400, reply


def test_decompressed_data_too_large(active_server: Any, put_object: Any, creds: Any) -> None:
    limit = active_server.max_object_size
    bomb = gzip.compress(bytes(limit * 4))
    url = put_object("safety/bomb.gz", bomb)
    status, reply = post(active_server, "count", body(url, compression={"id": "gzip"}), creds)
    assert status == 400 and "too large" in reply["error"]["message"], reply
    frame = bytes(numcodecs.Blosc(cname="zlib").encode(bytes(limit * 2)))
    url = put_object("safety/bomb.blosc", frame)
    status, reply = post(active_server, "count", body(url, compression={"id": "zlib"}), creds)
    assert status == 400 and "too large" in reply["error"]["message"], reply


def test_corrupt_or_mis_sized_compressed_data(
    active_server: Any, put_object: Any, creds: Any
) -> None:
    url = put_object("safety/corrupt.gz", gzip.compress(bytes(96))[:-12])
    status, reply = post(active_server, "count", body(url, compression={"id": "gzip"}), creds)
    assert status == 400 and "decompress" in reply["error"]["message"], reply
    fake = struct.pack("<BBBBIII", 2, 1, 0x70, 4, 64, 64, 40) + bytes(24)  # lying Blosc header
    url = put_object("safety/corrupt.blosc", fake)
    status, reply = post(active_server, "count", body(url, compression={"id": "blosc"}), creds)
    assert status == 400, reply
    url = put_object("safety/small.gz", gzip.compress(np.arange(6, dtype="<i4").tobytes()))
    fields = {"compression": {"id": "gzip"}, "shape": [2, 2]}
    status, reply = post(active_server, "count", body(url, **fields), creds)
    assert_field_error(status, reply, 400, "shape")


def _post_many(url: str, data: bytes, n: int, then: int = 0) -> tuple[list, list]:
    """Post ``data`` ``n`` times at once, then, half a second later, ``then`` more:
    the (status, seconds) of each, the first ``n`` and the later ones."""
    async def scenario() -> tuple[list, list]:
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(trust_env=False) as s:
            loop = asyncio.get_running_loop()

            async def one() -> tuple[int, float]:
                start = loop.time()
                async with s.post(url, data=data, headers=headers) as r:
                    body = await r.read()
                    assert r.status == 200 or b"server busy" in body, body
                    return r.status, loop.time() - start

            first = [asyncio.create_task(one()) for _ in range(n)]
            await asyncio.sleep(0.5)  # the first n are in flight or waiting by now
            later = await asyncio.gather(*(one() for _ in range(then)))
            return list(await asyncio.gather(*first)), list(later)

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def small_server(upstream_stub: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with 2 slots and 2 places in their queue, reading the stub."""
    log_path = tmp_path_factory.mktemp("small-server") / "server.log"
    proc, url = start_active_server(log_path, [
        "--allow-upstream", upstream_stub.origin, "--max-in-flight", "2",
        "--max-queued", "2", "--queue-timeout", str(SLOW_SECONDS * 4)])
    try:
        yield url
    finally:
        stop_process(proc)


def _slow_body(upstream_stub: Any) -> bytes:
    upstream_stub.objects["slow"] = np.arange(4, dtype="<i4").tobytes()
    return json.dumps(body(upstream_stub.url("slow", "slow"), interface_type="http")).encode()


def test_requests_beyond_the_slots_wait_for_one(small_server: str, upstream_stub: Any
                                                ) -> None:
    """Reductionist queues what it cannot start, and PyActiveStorage (30 threads) never
    retries a 503: 4 requests on 2 slots all get 200, the last two after a wait."""
    first, _ = _post_many(small_server + "/v2/sum/", _slow_body(upstream_stub), 4)
    assert [status for status, _ in first] == [200] * 4
    waited = sorted(seconds for _, seconds in first)[2:]
    assert all(s >= SLOW_SECONDS * 2 * 0.9 for s in waited), first  # behind a slow one


def test_a_full_queue_answers_busy(small_server: str, upstream_stub: Any) -> None:
    first, later = _post_many(small_server + "/v2/sum/", _slow_body(upstream_stub), 4, 1)
    assert [status for status, _ in first] == [200] * 4  # 2 in flight, 2 waiting
    assert [status for status, _ in later] == [503]  # the queue was full
    assert later[0][1] < SLOW_SECONDS  # at once, not after a wait


def test_a_wait_longer_than_queue_timeout_answers_busy(
    upstream_stub: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log_path = tmp_path_factory.mktemp("impatient-server") / "server.log"
    proc, url = start_active_server(log_path, [
        "--allow-upstream", upstream_stub.origin, "--max-in-flight", "1",
        "--queue-timeout", "0.2"])
    try:
        first, later = _post_many(url + "/v2/sum/", _slow_body(upstream_stub), 1, 1)
    finally:
        stop_process(proc)
    assert [status for status, _ in first] == [200]
    assert [status for status, _ in later] == [503]
    assert later[0][1] < SLOW_SECONDS


def test_requests_of_clients_that_left_the_queue_are_dropped(
    upstream_stub: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two clients wait behind a slow request and hang up: their places in the queue are
    given up at once (a new client waits only for the slow one), their objects are never
    fetched, and the log says they went away, not that the server failed (500)."""
    upstream_stub.objects["gone"] = np.arange(4, dtype="<i4").tobytes()
    data = json.dumps(body(upstream_stub.url("slow", "gone"), interface_type="http")).encode()
    log_path = tmp_path_factory.mktemp("queue-gone") / "server.log"
    proc, url = start_active_server(log_path, [
        "--allow-upstream", upstream_stub.origin, "--max-in-flight", "1",
        "--max-queued", "2", "--queue-timeout", "30"])
    headers = {"Content-Type": "application/json"}

    async def post_once(session: aiohttp.ClientSession) -> int:
        async with session.post(url + "/v2/sum/", data=data, headers=headers) as r:
            await r.read()
            return r.status

    async def queued_after_hang_up() -> tuple[int, bool, int]:
        async with aiohttp.ClientSession(trust_env=False) as held:
            slow = asyncio.create_task(post_once(held))
            await asyncio.sleep(0.3)  # it holds the one slot for SLOW_SECONDS
            async with aiohttp.ClientSession(trust_env=False) as leaving:
                waiting = [asyncio.create_task(post_once(leaving)) for _ in range(2)]
                await asyncio.sleep(0.3)  # both are in the queue now
                for task in waiting:
                    task.cancel()
            # leaving the session closed their connections
            async with aiohttp.ClientSession(trust_env=False) as s:
                for _ in range(200):
                    async with s.get(url + "/healthz") as r:
                        queued = (await r.json())["queued"]
                    if queued == 0:
                        break
                    await asyncio.sleep(0.05)
                slow_was_done = slow.done()
                late = await post_once(s)
            assert await slow == 200
            return queued, slow_was_done, late

    try:
        queued, slow_was_done, late = asyncio.run(asyncio.wait_for(queued_after_hang_up(), 60))
    finally:
        stop_process(proc)
    log_text = log_path.read_text()
    assert queued == 0 and not slow_was_done  # emptied while the slow one held the slot
    assert late == 200
    assert upstream_stub.slow_fetches["gone"] == 2  # the slow one and the late one
    assert "internal error" not in log_text and " 500 " not in log_text, log_text[-3000:]
    assert log_text.count("client went away") == 2, log_text[-3000:]


def test_a_hung_up_request_keeps_its_slot_until_its_thread_ends(
    upstream_stub: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A reduction's thread cannot be stopped when its client hangs up: the slot (and the
    buffer it reads) is given back only when the thread ends, so max_in_flight x object
    size still bounds the memory; meanwhile the next request waits for it."""
    from aiohttp import web

    from h5dask.active import server

    upstream_stub.objects["held"] = np.arange(4, dtype="<i4").tobytes()
    data = json.dumps(body(upstream_stub.url("obj", "held"), interface_type="http")).encode()
    headers = {"Content-Type": "application/json"}
    computing, finish = threading.Event(), threading.Event()
    real_compute_parts = server.compute_parts

    def held_compute_parts(*args: Any) -> Any:
        computing.set()
        finish.wait(30)
        return real_compute_parts(*args)

    monkeypatch.setattr(server, "compute_parts", held_compute_parts)

    async def scenario() -> tuple[dict, dict, int, dict]:
        app = server.create_app({"allow_upstream": [upstream_stub.origin], "max_in_flight": 1})
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        loop = asyncio.get_running_loop()

        async def health(s: aiohttp.ClientSession) -> dict:
            async with s.get(url + "/healthz") as r:
                return await r.json()

        async def post_once(s: aiohttp.ClientSession) -> int:
            async with s.post(url + "/v2/sum/", data=data, headers=headers) as r:
                await r.read()
                return r.status

        try:
            async with aiohttp.ClientSession(trust_env=False) as leaving:
                gone = asyncio.create_task(post_once(leaving))
                assert await loop.run_in_executor(None, computing.wait, 10)
                gone.cancel()
            computing.clear()
            async with aiohttp.ClientSession(trust_env=False) as s:
                await asyncio.sleep(0.5)  # time enough for the hang-up to be seen
                after_hang_up = await health(s)
                waiting = asyncio.create_task(post_once(s))
                for _ in range(100):
                    behind = await health(s)
                    if behind["queued"]:
                        break
                    await asyncio.sleep(0.05)
                finish.set()
                status = await asyncio.wait_for(waiting, 30)
                return after_hang_up, behind, status, await health(s)
        finally:
            finish.set()
            await runner.cleanup()

    with caplog.at_level("INFO", logger="h5dask.active"):
        after_hang_up, behind, status, idle = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert after_hang_up["in_flight"] == 1  # the thread still runs
    assert behind == {"status": "ok", "in_flight": 1, "queued": 1}
    assert status == 200 and idle["in_flight"] == 0
    assert caplog.text.count("client went away") == 1, caplog.text
    assert "internal error" not in caplog.text


# -- logging ---------------------------------------------------------------------------------


def test_log_has_one_line_per_request_and_no_credentials(
    active_server: Any, data_url: str, creds: Any
) -> None:
    secret = "very-secret-password-123"
    post(active_server, "min", body(data_url), ("AKIDLOGTEST", secret))
    status, _ = post(active_server, "max", body(data_url, shape=[2, 3, 4]), creds)
    assert status == 200
    text = active_server.log_text()
    token = base64.b64encode(f"AKIDLOGTEST:{secret}".encode()).decode()
    for needle in (secret, token, creds[1], "Authorization", "X-Amz-Signature"):
        assert needle not in text, needle
    lines = [ln for ln in text.splitlines() if "POST /v2/max/ 200" in ln]
    assert lines, text[-2000:]
    assert lines[-1].split()[-2].endswith("ms") and lines[-1].split()[-1].endswith("B")
