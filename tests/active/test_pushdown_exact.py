"""Pushed-down answers equal the local ones exactly on inputs chosen to break them, or
the reduction is computed locally (never a different number)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.active.pushdown import ActiveStorageWarning


def _store(url, storage_options, data, chunks, attrs=None):
    """``data`` as dataset ``v`` with raw ``attrs`` (as a netCDF writer left them)."""
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        d = f.create_dataset("v", data=data, chunks=chunks)
        for name, value in (attrs or {}).items():
            d.attrs[name] = value


def _both(url, storage_options, server, op):
    """(pushed down, local) answers of ``op`` over the whole of ``v``, and whether the
    pushed-down one asked the server."""
    def open_(**kw):
        return xr.open_dataset(url, engine="h5cloud", chunks={},
                               storage_options=storage_options, **kw)["v"]

    local = getattr(open_(), op)().compute(scheduler="sync")
    h5dask.reset_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveStorageWarning)
        remote = getattr(open_(active_storage_url=server.url), op)().compute(
            scheduler="sync")
    return remote, local, h5dask.stats()["active"]["read_requests"] > 0


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_sums_of_packed_int32_do_not_wrap_around(s3_bucket_url, storage_options,
                                                 pushdown_server, op):
    """A chunk of 500 int32 values of 2**30 sums to 2**39: the server summed it in int32
    and answered 0 (sum 1000.0 instead of 5.4e11)."""
    url = f"{s3_bucket_url}/packed.h5"
    _store(url, storage_options, np.full(1000, 2**30, "i4"), (500,),
           {"scale_factor": 0.5, "add_offset": 1.0, "_FillValue": np.int32(-1)})
    remote, local, pushed = _both(url, storage_options, pushdown_server, op)
    assert pushed
    assert float(local) == (2**29 + 1) * (1000 if op == "sum" else 1)
    assert remote.dtype == local.dtype and float(remote) == float(local)


@pytest.mark.parametrize("dtype", ["i4", "u4", ">i4"])
def test_sums_of_int32_are_pushed_down_and_exact(s3_bucket_url, storage_options,
                                                 pushdown_server, dtype):
    data = np.arange(1000).astype(dtype) + np.array(2**30 + 7, dtype)
    url = f"{s3_bucket_url}/i4.h5"
    _store(url, storage_options, data, (300,))
    remote, local, pushed = _both(url, storage_options, pushdown_server, "sum")
    assert pushed
    assert remote.dtype == local.dtype and int(remote) == int(local) == int(data.sum(
        dtype="i8"))


@pytest.mark.parametrize("dtype", ["i4", "u4", ">i4"])
def test_means_of_int32_are_pushed_down_and_exact(s3_bucket_url, storage_options,
                                                  pushdown_server, dtype):
    """dask's mean of integers (``mean_chunk`` with its default sum and numel) was not
    recognised: always reduced locally. Now pushed down, summed in int64 on the server
    (each chunk's sum is far beyond int32: a sum in int32 would wrap around)."""
    data = (np.arange(1000) * 7919 % 1000).astype(dtype) + np.array(2**30 + 7, dtype)
    url = f"{s3_bucket_url}/i4mean.h5"
    _store(url, storage_options, data, (300,))
    remote, local, pushed = _both(url, storage_options, pushdown_server, "mean")
    assert pushed
    assert remote.dtype == local.dtype == np.float64
    assert remote.item() == local.item() == np.mean(data)



def _reduced(url, storage_options, op, chunks, **kw):
    """``op`` (sum, mean) of variable v opened with ``chunks``, on the sync scheduler with
    ActiveStorageWarning an error: its value and the server requests it made."""
    v = xr.open_dataset(url, engine="h5cloud", chunks=chunks,
                        storage_options=storage_options, **kw)["v"]
    h5dask.reset_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveStorageWarning)
        got = getattr(v, op)().compute(scheduler="sync")
    return got.item(), h5dask.stats()["active"]["read_requests"]

def test_int32_means_of_blocks_beyond_2_53_are_computed_locally(s3_bucket_url,
                                                                storage_options,
                                                                pushdown_server):
    """dask sums a block's integers in float64, exactly only while the sums stay within
    2**53: a block of more than 2**22 int32 values is left to dask (its number), smaller
    blocks of the same variable are pushed down."""
    n = 2**22 + 8
    data = (np.arange(n) % 1000).astype("i4")
    url = f"{s3_bucket_url}/i4mean-big.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("v", data=data, chunks=(2**20,), compression="gzip")

    def mean(chunks, **kw):
        return _reduced(url, storage_options, "mean", chunks, **kw)

    whole = {"phony_dim_0": -1}
    assert mean(whole, active_storage_url=pushdown_server.url) == (mean(whole)[0], 0)
    assert mean({}, active_storage_url=pushdown_server.url) == (np.mean(data), 5)


def test_int32_means_in_another_dtype_are_computed_locally(s3_bucket_url, storage_options,
                                                          pushdown_server):
    """``mean(dtype="f4")`` sums in float32 (dask's mean_chunk): the server's exact sum
    would be another number, so it is left to dask."""
    data = (np.arange(3000) * 7919 % 100003).astype("i4") + np.int32(2**24 + 1)
    url = f"{s3_bucket_url}/i4mean-f4.h5"
    _store(url, storage_options, data, (1000,))

    def mean(**kw):
        v = xr.open_dataset(url, engine="h5cloud", chunks={},
                            storage_options=storage_options, **kw)["v"]
        return v.mean(dtype="f4").compute(scheduler="sync")

    local = mean()
    h5dask.reset_stats()
    remote = mean(active_storage_url=pushdown_server.url)
    assert h5dask.stats()["active"]["read_requests"] == 0
    assert remote.dtype == local.dtype == np.float32 and remote.item() == local.item()


@pytest.mark.parametrize("dtype", ["i8", "u8"])
def test_means_of_int64_are_computed_locally(s3_bucket_url, storage_options, pushdown_server,
                                             dtype):
    """dask sums int64 in float64; the server's int64 sum of these chunks would wrap."""
    data = np.array([2**62, 2**62 + 1, 2**62 + 2, 2**62 + 3] * 2, dtype)
    url = f"{s3_bucket_url}/i8mean.h5"
    _store(url, storage_options, data, (4,))
    remote, local, pushed = _both(url, storage_options, pushdown_server, "mean")
    assert not pushed
    assert remote.item() == local.item() == np.mean(data)


def test_sums_of_packed_int64_are_computed_locally(s3_bucket_url, storage_options,
                                                   pushdown_server):
    """xarray sums decoded floats; the server's int64 sum would wrap around at 2**63."""
    url = f"{s3_bucket_url}/packed8.h5"
    _store(url, storage_options, np.full(8, 2**62, "i8"), (4,), {"scale_factor": 2.0})
    remote, local, pushed = _both(url, storage_options, pushdown_server, "sum")
    assert not pushed
    assert float(remote) == float(local) == 8 * 2.0**63


@pytest.mark.parametrize("dtype", ["f4", "f8"])
@pytest.mark.parametrize(("op", "inf"), [("max", -np.inf), ("min", np.inf)])
def test_extremes_of_infinite_chunks_stay_infinite(s3_bucket_url, storage_options,
                                                   pushdown_server, dtype, op, inf):
    """The server's fold starts from the largest finite value: a chunk holding only
    infinities answered that value, and max() of all -inf was -3.4e38, not -inf."""
    url = f"{s3_bucket_url}/inf.h5"
    _store(url, storage_options, np.full(8, inf, dtype), (4,))
    remote, local, _ = _both(url, storage_options, pushdown_server, op)
    assert float(local) == inf
    assert remote.dtype == local.dtype and float(remote) == inf


@pytest.mark.parametrize("op", ["sum", "min", "mean", "count"])
def test_a_fill_value_no_stored_value_equals_masks_nothing(s3_bucket_url, storage_options,
                                                           pushdown_server, op):
    """xarray compares float32 data with a float64 _FillValue of 0.1 in float64: nothing
    is masked. The server was sent 0.1, rounded it to float32 and masked the 0.1s
    (count 15 instead of 20)."""
    url = f"{s3_bucket_url}/fill.h5"
    _store(url, storage_options, np.array([0.1, 1, 2, 3] * 5, "f4"), (4,),
           {"_FillValue": np.float64(0.1)})
    remote, local, pushed = _both(url, storage_options, pushdown_server, op)
    assert pushed
    assert int(_both(url, storage_options, pushdown_server, "count")[1]) == 20
    assert remote.dtype == local.dtype and remote.item() == local.item()


@pytest.mark.parametrize("op", ["min", "max", "count"])
def test_int64_fill_values_beyond_2_53_are_reduced_locally(s3_bucket_url, storage_options,
                                                           pushdown_server, op):
    """xarray masks int64 data as float64, where 2**60 + 1 equals a _FillValue of 2**60;
    the server compared exactly and counted it (count 3 instead of 2)."""
    url = f"{s3_bucket_url}/fill8.h5"
    _store(url, storage_options, np.array([2**60, 2**60 + 1, 3, 4], "i8"), (2,),
           {"_FillValue": np.int64(2**60)})
    remote, local, pushed = _both(url, storage_options, pushdown_server, op)
    assert not pushed
    assert remote.dtype == local.dtype and remote.item() == local.item()


@pytest.mark.parametrize("scale", [np.float32(0.1), np.float32(-0.1)])
@pytest.mark.parametrize("fill", [False, True])
@pytest.mark.parametrize("op", ["min", "max"])
def test_extremes_of_float32_packed_int32_are_bit_exact(s3_bucket_url, storage_options,
                                                        pushdown_server, op, fill, scale):
    """With a float32 scale_factor xarray decodes int32 to float32 and scales there; the
    pushed-down extreme was scaled in float64 and rounded once, a different last bit for
    about a quarter of the values."""
    data = np.random.default_rng(0).integers(2**24, 2**31, size=4000).astype("i4")
    attrs = {"scale_factor": scale, **({"_FillValue": np.int32(-1)} if fill else {})}
    url = f"{s3_bucket_url}/f4packed.h5"
    _store(url, storage_options, data, (100,), attrs)
    remote, local, pushed = _both(url, storage_options, pushdown_server, op)
    assert pushed
    assert local.dtype == np.float32
    assert remote.dtype == local.dtype and remote.item() == local.item()


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("attrs", [{}, {"_FillValue": np.float32(-999.0)}])
def test_float32_sums_with_missing_values_are_bit_exact(s3_bucket_url, storage_options,
                                                        pushdown_server, op, attrs):
    """xarray's skipna sum of a chunk is numpy.nansum's pairwise sum; the server summed
    with a mask, in another order (-23.346237 vs -23.346214)."""
    rng = np.random.default_rng(1)
    data = rng.normal(size=4000).astype("f4")
    data[::7] = np.nan if not attrs else -999.0
    url = f"{s3_bucket_url}/f4nan.h5"
    _store(url, storage_options, data, (1000,), attrs)
    remote, local, pushed = _both(url, storage_options, pushdown_server, op)
    assert pushed
    assert remote.dtype == local.dtype and remote.item() == local.item()


def test_a_float_fill_value_on_int32_data_is_sent_as_an_integer(s3_bucket_url,
                                                                 storage_options,
                                                                 pushdown_server):
    """A float64 _FillValue of -9999.0 on int32 data was sent as -9999.0, which the
    server refuses for an integer dtype: every such reduction fell back locally."""
    url = f"{s3_bucket_url}/ifill.h5"
    _store(url, storage_options, np.array([1, -9999, 2, 3] * 5, "i4"), (4,),
           {"_FillValue": np.float64(-9999.0)})
    remote, local, pushed = _both(url, storage_options, pushdown_server, "count")
    assert pushed
    assert remote.item() == local.item() == 15


#: integers whose extremes sit in different chunks, next to neighbours float64 cannot
#: tell apart (int64: 2**60 + 1 is 2**60 in float64)
INT_BASES = {"i4": -(2**31) + 5, "u4": 2**31 + 5, ">i4": 2**30 + 5,
             "i8": 2**60 + 1, "u8": 2**63 + 1, ">i8": -(2**62) - 1}


@pytest.mark.parametrize("dtype", list(INT_BASES))
@pytest.mark.parametrize("op", ["min", "max"])
def test_extremes_of_integers_are_pushed_down_and_exact(s3_bucket_url, storage_options,
                                                        pushdown_server, op, dtype):
    """dask's min/max of integers run ``chunk_min``/``chunk_max`` on each block, which
    the rewrite did not recognise: integer extremes were always reduced locally. Now
    pushed down, and combined in the integer dtype (float64 would move 2**60 + 1)."""
    rng = np.random.default_rng(2)
    offsets = rng.permutation(1000).astype("u8")  # 0 and 999 in some chunk each
    base = INT_BASES[dtype]
    data = np.array([base + int(o) for o in offsets], dtype=dtype)
    url = f"{s3_bucket_url}/iext.h5"
    _store(url, storage_options, data, (300,))
    remote, local, pushed = _both(url, storage_options, pushdown_server, op)
    assert pushed
    want = base + (0 if op == "min" else 999)
    assert remote.dtype == local.dtype and remote.item() == local.item() == want


@pytest.mark.parametrize("attrs", [{"_FillValue": np.int32(-7)},
                                   {"missing_value": np.int32(-7)},
                                   {"_FillValue": np.int32(-7), "missing_value": np.int32(990)}])
@pytest.mark.parametrize("op", ["min", "max"])
@pytest.mark.filterwarnings("ignore:variable 'v' has multiple fill values")
def test_extremes_of_integers_with_fill_values_are_pushed_down_and_exact(
        s3_bucket_url, storage_options, pushdown_server, op, attrs):
    """Masked integers decode to floats (xarray's nanmin/nanmax): the fills, planted as
    the extremes of some chunks, are left out on the server as xarray leaves them out."""
    data = np.arange(-5, 995, dtype="i4")
    data[[3, 400, 998]] = -7
    data[[10, 650]] = 990
    url = f"{s3_bucket_url}/ifillext.h5"
    _store(url, storage_options, data, (300,), attrs)
    remote, local, pushed = _both(url, storage_options, pushdown_server, op)
    assert pushed
    masked = np.ma.masked_where(np.isin(data, [v for v in attrs.values()]), data)
    want = float(masked.min() if op == "min" else masked.max())
    assert remote.dtype == local.dtype and remote.item() == local.item() == want


#: (isel, reduced dims): reversed axes that are reduced, reversed axes that are kept (the
#: answer's order reversed too), both, with steps of 1, 2 and 3 across chunk edges
REVERSED_SELECTIONS = [
    ({"phony_dim_1": slice(None, None, -1)}, ("phony_dim_1",)),
    ({"phony_dim_1": slice(None, None, -2)}, ("phony_dim_0",)),
    ({"phony_dim_0": slice(None, None, -1), "phony_dim_1": slice(None, None, -2)}, None),
    ({"phony_dim_0": slice(33, 3, -2), "phony_dim_1": slice(29, 1, -3)}, ("phony_dim_1",)),
    ({"phony_dim_0": slice(3, 33, 2), "phony_dim_1": slice(None, None, -1)}, ("phony_dim_0",)),
]
NUMPY_REDUCTIONS = {"sum": np.nansum, "min": np.nanmin, "max": np.nanmax, "mean": np.nanmean,
                    "count": lambda a, axis: np.sum(~np.isnan(a), axis=axis)}


@pytest.mark.parametrize("dtype", ["f4", "i4"])
@pytest.mark.parametrize("op", ["sum", "min", "max", "mean", "count"])
@pytest.mark.parametrize(("isel", "dims"), REVERSED_SELECTIONS,
                         ids=[str(i) for i in range(len(REVERSED_SELECTIONS))])
def test_reversed_selections_reduce_as_numpy(s3_bucket_url, storage_options, pushdown_server,
                                             dtype, op, isel, dims):
    """Negative steps (``[::-1]``, ``[::-2]``) are pushed down over the same elements, and
    a kept reversed axis comes back in its reversed order; the answer is numpy's."""
    data = ((np.arange(40 * 30).reshape(40, 30) * 7919) % 1000).astype(dtype)
    if dtype == "f4":
        data[5, 7] = data[30, 28] = np.nan  # skipped, as xarray skips them
    url = f"{s3_bucket_url}/reversed-{dtype}.h5"
    _store(url, storage_options, data, (7, 11))
    v = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=storage_options,
                        active_storage_url=pushdown_server.url)["v"]
    selected = data[tuple(isel.get(d, slice(None)) for d in ("phony_dim_0", "phony_dim_1"))]
    axis = None if dims is None else tuple(int(d[-1]) for d in dims)
    want = NUMPY_REDUCTIONS[op](selected.astype("f8"), axis=axis)
    h5dask.reset_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveStorageWarning)
        got = getattr(v.isel(isel), op)(dims).compute(scheduler="sync").values
    # the count of integers is xarray's own (left to dask); the rest is pushed
    if dtype == "f4" or op in ("sum", "min", "max", "mean"):
        assert h5dask.stats()["active"]["read_requests"] > 0
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-6 if op == "mean" else 0)


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_masked_uint32_sums_of_blocks_beyond_2_53_are_computed_locally(
        s3_bucket_url, storage_options, pushdown_server, op):
    """Integers with a _FillValue are decoded to float64, and dask sums a block of them
    in float64, rounding once its sums pass 2**53: the 2**53 guard covered only unmasked
    integers, and a block of 2**23 masked uint32 answered the server's exact sum, not
    dask's. A block of more than 2**21 uint32 values is left to dask; smaller blocks of
    the same variable are pushed down."""
    n = 2**21 + 8
    data = np.full(n, 2**32 - 2, dtype="u4")
    data[::7] = 0  # the fill value: masked
    url = f"{s3_bucket_url}/masked-u4-big.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        d = f.create_dataset("v", data=data, chunks=(2**19,), compression="gzip")
        d.attrs["_FillValue"] = np.uint32(0)

    def reduce(chunks, **kw):
        return _reduced(url, storage_options, op, chunks, **kw)

    whole = {"phony_dim_0": -1}
    assert reduce(whole, active_storage_url=pushdown_server.url) == (reduce(whole)[0], 0)
    assert reduce({}, active_storage_url=pushdown_server.url) == (reduce({})[0], 5)


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize(("scale", "offset", "pushed"), [
    (0.1, None, False),  # 0.1 * v rounds: dask sums rounded values, another number
    (0.5, 0.3, False),  # v * 0.5 + 0.3 rounds
    (0.25, 0.5, True),  # a power of two and a whole multiple of it: nothing rounds
    (1.0, -7.0, True),
])
def test_packed_int32_sums_are_pushed_down_only_where_exact(
        s3_bucket_url, storage_options, pushdown_server, op, scale, offset, pushed):
    """The server answers s * sum + o * n from its exact integer sum; xarray decodes each
    value (rounded) and dask sums those: with a scale of 0.1 the two differed in the
    last bits. Such sums and means are left to dask."""
    rng = np.random.default_rng(1)
    data = rng.integers(-2**31 + 1, 2**31 - 1, size=4000, dtype=np.int64).astype("i4")
    attrs = {"scale_factor": scale, "_FillValue": np.int32(-2**31)}
    if offset is not None:
        attrs["add_offset"] = offset
    url = f"{s3_bucket_url}/packed-{scale}-{offset}.h5"
    _store(url, storage_options, data, (1000,), attrs)
    remote, local, was_pushed = _both(url, storage_options, pushdown_server, op)
    assert was_pushed == pushed
    assert remote.dtype == local.dtype and remote.item() == local.item()


@pytest.mark.parametrize("stored, dtype, pushed", [
    ("i4", "f4", False),  # float32 rounds 2**24 + 1: left to dask
    ("i4", "f8", True),   # 300 int32 values: float64 holds every partial sum
    ("i8", "f8", False),  # int64 values beyond 2**53 round in float64: left to dask
])
def test_integer_sums_in_a_float_dtype_are_pushed_down_only_where_exact(
        s3_bucket_url, storage_options, pushdown_server, stored, dtype, pushed):
    """``sum(dtype=float)`` of integers: dask sums in that float, rounding each value and
    partial sum; the server's exact integer sum cast to it would be another number."""
    big = 2**24 + 1 if stored == "i4" else 2**53 + 1
    data = np.full(1000, big, stored)
    url = f"{s3_bucket_url}/isum-{stored}-{dtype}.h5"
    _store(url, storage_options, data, (300,))

    def total(**kw):
        v = xr.open_dataset(url, engine="h5cloud", chunks={},
                            storage_options=storage_options, **kw)["v"]
        return v.sum(dtype=dtype).compute(scheduler="sync")

    local = total()
    h5dask.reset_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveStorageWarning)
        remote = total(active_storage_url=pushdown_server.url)
    assert (h5dask.stats()["active"]["read_requests"] > 0) == pushed
    assert remote.dtype == local.dtype == np.dtype(dtype)
    assert remote.item() == local.item()
