"""Unit tests (no servers) of the request model, the operations' semantics and helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from servers.active import MODULE_COMMAND, PROJECT_ROOT

from h5dask.active.config import ServerConfigError
from h5dask.active.errors import FieldError, redact_url
from h5dask.active.operations import build_array, reduce_array, run
from h5dask.active.request import Missing, ReductionRequest
from h5dask.active.server import ServerConfig, compute, encode_response, parse_size
from h5dask.active.upstream import AllowList, Credentials, parse_s3_url
from h5dask.errors import H5DaskError

URL = "http://127.0.0.1:9000/bucket/key"


def req(**fields: Any) -> ReductionRequest:
    base = {"interface_type": "s3", "url": URL, "dtype": "int32"}
    return ReductionRequest.from_dict({**base, **fields})


# -- request model ---------------------------------------------------------------------------


def test_request_defaults_and_nulls() -> None:
    r = req(shape=None, axis=None, missing=None, byte_order="big")
    assert (r.offset, r.size, r.shape, r.axis, r.order, r.filters) == (0, None, None, None, "C", ())
    assert r.stored_dtype == np.dtype(">i4")
    assert req(shape=[2, 3], axis=1).axis == (1,)
    assert req(shape=[2, 3], axis=[]).axis == ()


def test_request_selection_as_objects() -> None:
    r = req(shape=[4], selection=[{"start": 3, "end": -5, "stride": -1}])
    assert r.selection is not None and r.selection[0].to_slice() == slice(3, -5, -1)


def test_request_size_checked_only_without_compression() -> None:
    with pytest.raises(FieldError) as info:
        req(shape=[2, 2], size=12)
    assert info.value.field == "shape"
    assert req(shape=[2, 2], size=12, compression={"id": "gzip"}).size == 12


def test_request_is_frozen() -> None:
    r = req()
    with pytest.raises(AttributeError):
        r.dtype = "int64"  # type: ignore[misc]


def test_missing_values_typed_for_dtype() -> None:
    r = ReductionRequest.from_dict(
        {"interface_type": "s3", "url": URL, "dtype": "float32", "missing": {"valid_min": 1}}
    )
    assert r.missing == Missing("valid_min", (1.0,))
    r = req(dtype="uint64", missing={"missing_values": [2**64 - 1, 0]})
    assert r.missing is not None and r.missing.values == (2**64 - 1, 0)


# -- operations semantics ------------------------------------------------------------------


def test_fortran_order() -> None:
    a = np.arange(6, dtype="<i4").reshape(2, 3)
    r = req(shape=[2, 3], order="F")
    data = a.tobytes(order="F")
    assert build_array(data, r).tolist() == a.tolist()
    sel = run("select", data, r)  # element-wise results keep the request's order
    assert sel.values.tolist() == a.ravel(order="F").tolist() and sel.shape == (2, 3)
    r_axis = req(shape=[2, 3], order="F", axis=1)  # reductions come out in C order
    assert run("sum", data, r_axis).values.tolist() == a.sum(axis=1).tolist()


def test_fortran_order_element_wise_count_is_c_order() -> None:
    """Reductionist's count over no axes maps the array in its logical (C) order, where
    min/max/sum over no axes transpose it first (Fortran order): both as there."""
    a = np.arange(6, dtype="<i4").reshape(2, 3)
    data = a.tobytes(order="F")
    r = req(shape=[2, 3], order="F", axis=[], missing={"missing_value": 4})
    want_counts = (a != 4).astype(np.int64)
    count = run("count", data, r)
    assert count.shape == (2, 3)
    assert count.values.tolist() == count.counts.tolist() == want_counts.ravel().tolist()
    total = run("sum", data, r)
    assert total.values.tolist() == a.ravel(order="F").tolist()
    assert total.counts.tolist() == want_counts.ravel(order="F").tolist()


def test_empty_selection_gives_fold_start_values() -> None:
    a = np.arange(4, dtype="<f4")
    r = ReductionRequest.from_dict(
        {"interface_type": "s3", "url": URL, "dtype": "float32", "shape": [4],
         "selection": [[2, 2, 1]]}
    )  # fmt: skip
    info = np.finfo("float32")
    assert run("min", a.tobytes(), r).values.tolist() == [info.max]
    assert run("max", a.tobytes(), r).values.tolist() == [info.min]
    assert run("sum", a.tobytes(), r).values.tolist() == [0.0]
    assert run("count", a.tobytes(), r).counts.tolist() == [0]


def test_reduction_over_no_axes() -> None:
    a = np.array([[1, 7], [7, 2]], dtype="i4")
    res = reduce_array("max", a, axis=(), missing=Missing("missing_value", (7,)))
    assert res.values.tolist() == [1, 7, 7, 2] and res.counts.tolist() == [1, 0, 0, 1]
    cnt = reduce_array("count", a, axis=(), missing=Missing("missing_value", (7,)))
    assert cnt.values.tolist() == [1, 0, 0, 1] and cnt.dtype == "int64"


def test_integer_sum_wraps_like_reductionist() -> None:
    a = np.array([2**31 - 1, 1], dtype="int32")
    assert reduce_array("sum", a).values.tolist() == [-(2**31)]


def test_nan_handling() -> None:
    a = np.array([1.0, np.nan, 3.0])
    assert np.isnan(reduce_array("max", a).values[0])  # propagates (Reductionist fails)
    # NaN is neither below nor above a bound: never missing (Reductionist's is_missing)
    for kind, values in (("valid_min", (0.0,)), ("valid_max", (5.0,)),
                         ("valid_range", (0.0, 5.0))):
        total = reduce_array("sum", a, missing=Missing(kind, values))
        assert np.isnan(total.values[0]) and total.counts.tolist() == [3], kind
        assert reduce_array("count", a, missing=Missing(kind, values)).values.tolist() == [3]
    dropped = reduce_array("sum", a, missing=Missing("valid_max", (2.0,)))
    assert np.isnan(dropped.values[0]) and dropped.counts.tolist() == [2]  # 3.0 dropped
    mv = reduce_array("count", a, missing=Missing("missing_value", (1.0,)))
    assert mv.values.tolist() == [2]  # NaN is never equal to a missing value


def test_select_count_is_one_element() -> None:
    a = np.arange(12, dtype="i8").reshape(3, 4)
    res = reduce_array("select", a, axis=(1,), missing=Missing("valid_max", (5,)))
    assert res.shape == (3, 4) and res.counts.tolist() == [6]


MISSING_STRATEGY = st.one_of(
    st.none(),
    st.builds(lambda v: Missing("missing_value", (v,)), st.integers(-5, 5)),
    st.builds(lambda v: Missing("missing_values", tuple(v)), st.lists(st.integers(-5, 5))),
    st.builds(lambda v: Missing("valid_min", (v,)), st.integers(-5, 5)),
    st.builds(lambda v: Missing("valid_max", (v,)), st.integers(-5, 5)),
    st.builds(lambda v: Missing("valid_range", (v, v + 3)), st.integers(-5, 5)),
)


@settings(max_examples=150, deadline=None)
@given(
    a=hnp.arrays(
        st.sampled_from(["i4", "u8", "f8"]),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4),
        elements=st.integers(0, 6),
    ),
    op=st.sampled_from(["count", "min", "max", "sum"]),
    data=st.data(),
    missing=MISSING_STRATEGY,
)
def test_reductions_match_masked_arrays(
    a: np.ndarray, op: str, data: Any, missing: Missing | None
) -> None:
    if missing is not None and a.dtype.kind == "u":
        missing = Missing(missing.kind, tuple(abs(v) for v in missing.values))
        if missing.kind == "valid_range":
            missing = Missing("valid_range", (missing.values[0], missing.values[0] + 3))
    axes = data.draw(st.one_of(st.none(), st.sets(st.integers(0, a.ndim - 1)).map(sorted)))
    res = reduce_array(op, a, axis=None if axes is None else tuple(axes), missing=missing)
    keep = np.ones(a.shape, bool) if missing is None else _keep(a, missing)
    ax = None if axes is None else tuple(axes)
    if ax == ():
        exp_counts = keep.astype(np.int64)
        expected = exp_counts if op == "count" else a
    else:
        # Filled arrays with an explicit start value (np.ma cannot reduce empty arrays).
        exp_counts = np.asarray(keep.sum(axis=ax), dtype=np.int64)
        info = np.iinfo(a.dtype) if a.dtype.kind in "iu" else np.finfo(a.dtype)
        hi, lo = a.dtype.type(info.max), a.dtype.type(info.min)
        expected = {
            "count": lambda: exp_counts,
            "sum": lambda: np.where(keep, a, 0).astype(a.dtype).sum(axis=ax, dtype=a.dtype),
            "min": lambda: np.where(keep, a, hi).min(axis=ax, initial=hi),
            "max": lambda: np.where(keep, a, lo).max(axis=ax, initial=lo),
        }[op]()
    expected = np.asarray(expected)
    assert res.shape == expected.shape
    np.testing.assert_array_equal(res.values, expected.ravel().astype(res.values.dtype))
    np.testing.assert_array_equal(res.counts, np.asarray(exp_counts).ravel())


def _keep(a: np.ndarray, missing: Missing) -> np.ndarray:
    v = missing.values
    return {
        "missing_value": lambda: a != v[0],
        "missing_values": lambda: ~np.isin(a, np.array(v, dtype=a.dtype)),
        "valid_min": lambda: ~(a < v[0]),
        "valid_max": lambda: ~(a > v[0]),
        "valid_range": lambda: ~((a < v[0]) | (a > v[1])),
    }[missing.kind]()


# -- reply and helpers ---------------------------------------------------------------------


def test_compute_reply_layout() -> None:
    r = req(shape=[2, 2], axis=0, byte_order="big")
    reply = cbor2.loads(compute("sum", r, np.arange(4, dtype=">i4").tobytes(), 1 << 20))
    assert list(reply) == [
        "bytes",
        "dtype",
        "shape",
        "shape_as_bytes",
        "count",
        "count_as_bytes",
        "byte_order",
    ]
    assert np.frombuffer(reply["bytes"], "=i4").tolist() == [2, 4]  # native byte order
    assert reply["shape"] == [2] and reply["count"] == [2, 2]


def test_encode_response_options() -> None:
    r = req(shape=[2], option_count_as_bytes=True)
    reply = cbor2.loads(encode_response(reduce_array("count", np.arange(2, dtype="i4")), r))
    assert reply["count"] == [] and np.frombuffer(reply["count_as_bytes"], "i8").tolist() == [2]


def test_allow_list() -> None:
    allow = AllowList(["http://127.0.0.1:9000", "https://s3.example.org", "HTTP://LocalHost"])
    assert allow.allows("http://127.0.0.1:9000/b/k")
    assert allow.allows("https://S3.example.org:443/b/k")
    assert allow.allows("http://localhost:80/b/k")
    assert not allow.allows("http://127.0.0.1:90/b/k")
    assert not allow.allows("https://127.0.0.1:9000/b/k")
    assert not allow.allows("http://a@127.0.0.1:9000/b/k")
    for bad in ("127.0.0.1:9000", "ftp://h", "http://h/path", "http://u:p@h", "http://h:x"):
        with pytest.raises(ValueError):
            AllowList([bad])


def test_s3_url_parsing_and_redaction() -> None:
    assert parse_s3_url("http://h:1/b/a/b%2Fc") == ("http://h:1", "b", "a/b/c")
    assert redact_url("https://u:p@h/x?sig=1#f") == "https://h/x"
    assert "secret" not in repr(Credentials("key", "secret"))


def test_parse_size() -> None:
    assert parse_size("1048576") == 1 << 20
    assert parse_size("2G") == 2 << 30
    with pytest.raises(ValueError):
        parse_size("lots")


def test_field_error_body() -> None:
    body = FieldError("axis", "out of range").body()
    assert json.loads(json.dumps(body))["error"]["caused_by"] == ["axis: out of range"]


@settings(max_examples=100, deadline=None)
@given(
    a=hnp.arrays(
        st.sampled_from(["f4", "f8"]),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
        elements=st.one_of(st.floats(-4, 4, width=32), st.just(float("nan")),
                           st.just(float("inf")), st.just(float("-inf"))),
    ),
    op=st.sampled_from(["min", "max", "sum"]),
    data=st.data(),
)
def test_skip_nan_equals_the_masked_reduction(a: np.ndarray, op: str, data: Any) -> None:
    """skip_nan first tries the plain reduction and keeps it only when NaN-free: the
    values and counts are those of the reduction with every NaN masked out."""
    axes = data.draw(st.one_of(st.none(), st.sets(st.integers(0, a.ndim - 1), min_size=1)
                               .map(lambda s: tuple(sorted(s)))))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN on both sides
        res = reduce_array(op, a, axis=axes, skip_nan=True)
        expected = _masked_nan_reduction(op, a, axes)
    keep = ~np.isnan(a)
    np.testing.assert_allclose(res.values, np.asarray(expected).ravel(), rtol=1e-5)
    assert res.counts.tolist() == np.asarray(keep.sum(axis=axes)).ravel().tolist()


def _masked_nan_reduction(op: str, a: np.ndarray, axes: tuple | None) -> np.ndarray:
    keep = ~np.isnan(a)
    info = np.finfo(a.dtype)
    start = {"sum": 0, "min": info.max, "max": info.min}[op]
    filled = np.where(keep, a, a.dtype.type(start))
    return {"sum": lambda: filled.sum(axis=axes, dtype=a.dtype),
            "min": lambda: filled.min(axis=axes, initial=info.max),
            "max": lambda: filled.max(axis=axes, initial=info.min)}[op]()


def test_buffer_pool_reuses_within_its_budget() -> None:
    from h5dask.active.memory import BufferPool

    pool = BufferPool(budget=10)
    a, b = pool.take(4), pool.take(4)
    assert pool.held == 8 and a is not b
    pool.give(a)
    assert pool.take(4) is a  # reused, not allocated
    pool.give(a)
    pool.give(b)
    assert pool.held == 8  # both idle
    c = pool.take(6)  # a new size: idle buffers are dropped to stay within the budget
    assert pool.held <= 10 and c.nbytes == 6
    pool.forget(c)  # something may still use it: never handed out again
    held = [pool.take(6), pool.take(6)]
    assert all(d is not c for d in held)
    pool.give(np.empty(3, np.uint8))  # not from the pool: ignored
    pool.clear()
    assert pool.held == 12  # the two size-6 buffers still in use


def test_a_busy_server_is_asked_again_with_fewer_requests_in_flight() -> None:
    """A server answers 503 "server busy" beyond its own limit (and its queue): the
    client then lowers its requests in flight to that server and sends the refused
    request again, instead of falling back to a local reduction."""
    import asyncio

    from aiohttp import web

    from h5dask.active import client

    limit, seen = 3, {"now": 0, "max": 0, "busy": 0}
    reply = encode_response(reduce_array("sum", np.arange(4, dtype="i8")),
                            req(shape=[4]))

    async def handler(request: web.Request) -> web.Response:
        if seen["now"] >= limit:
            seen["busy"] += 1
            return web.json_response({"error": {"message": "server busy"}}, status=503)
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        await asyncio.sleep(0.02)
        seen["now"] -= 1
        return web.Response(body=reply, content_type="application/cbor")

    async def scenario() -> list[Any]:
        app = web.Application()
        app.router.add_post("/v2/sum/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            request = client.ChunkRequest("sum", {"url": "x"})
            return await asyncio.gather(*(client.reduce_remote(url, request, None)
                                          for _ in range(20)))
        finally:
            await client._sessions.pop(id(asyncio.get_running_loop())).close()
            await runner.cleanup()

    replies = asyncio.run(scenario())
    assert [r.values.tolist() for r in replies] == [6] * 20
    assert seen["max"] <= limit and seen["busy"] < 20  # learnt the limit quickly


@pytest.mark.parametrize("dtype", ["int32", "uint32", ">i4"])
def test_sum_int64_accumulates_in_64_bits(dtype: str) -> None:
    """The h5dask extension ``sum_int64``: a chunk's integer sum cannot wrap around."""
    a = np.full((4, 500), 2**30, dtype=dtype)
    wrapped = reduce_array("sum", a, axis=(1,))
    wide = reduce_array("sum", a, axis=(1,), sum_int64=True)
    assert wrapped.values.tolist() == [0] * 4  # Reductionist's (wrapping) sum
    assert wide.dtype == ("uint64" if dtype == "uint32" else "int64")
    assert wide.values.tolist() == [500 * 2**30] * 4
    req = ReductionRequest.from_dict({"interface_type": "s3", "url": "http://h:1/b/k",
                                      "dtype": "int32", "sum_int64": True})
    assert req.sum_int64
    with pytest.raises(FieldError, match="sum_int64"):
        ReductionRequest.from_dict({"interface_type": "s3", "url": "http://h:1/b/k",
                                    "dtype": "int32", "sum_int64": 1})



def test_int_mean_exactness_guard() -> None:
    """A pushed-down integer mean is summed in int64: a block is left to dask when that
    sum could overflow, or when dask's float64 sum of it could round (beyond 2**53)."""
    from h5dask.active.pushdown import mean_sum_is_exact

    assert mean_sum_is_exact(np.dtype("i4"), 2**22)
    assert not mean_sum_is_exact(np.dtype("i4"), 2**22 + 1)
    assert mean_sum_is_exact(np.dtype(">u4"), 2**21)
    assert not mean_sum_is_exact(np.dtype("u4"), 2**21 + 1)
    assert not mean_sum_is_exact(np.dtype("i8"), 1)

# -- server settings ---------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_queued", -1, "max_queued (--max-queued) must be at least 0, not -1"),
    ("queue_timeout", 0, "queue_timeout (--queue-timeout) must be positive, not 0"),
    ("max_in_flight", 0, "max_in_flight (--max-in-flight) must be at least 1, not 0"),
])
def test_bad_server_settings_are_config_errors(field: str, value: Any, message: str) -> None:
    with pytest.raises(ServerConfigError) as info:
        ServerConfig(**{field: value})
    assert isinstance(info.value, H5DaskError)
    assert str(info.value) == message


@pytest.mark.parametrize("command", [MODULE_COMMAND, (sys.executable, "-m", "h5dask.cli",
                                                      "serve-active")],
                         ids=["python -m h5dask.active.server", "h5dask serve-active"])
@pytest.mark.parametrize(("option", "value", "message"), [
    ("--max-queued", "-1", "--max-queued) must be at least 0, not -1"),
    ("--queue-timeout", "0", "--queue-timeout) must be positive, not 0"),
])
def test_both_entry_points_refuse_bad_settings_cleanly(
        command: tuple[str, ...], option: str, value: str, message: str) -> None:
    """A bad setting is one line naming the option, never a traceback (nor a server)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([*command, "--allow-upstream", "http://127.0.0.1:9", option, value],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert message in done.stderr
