"""The real PyActiveStorage client (``activestorage.reductionist.reduce_chunk``) against
our server, on chunks stored in SeaweedFS, compared with a NumPy masked-array reference.

Coverage, kept to a few hundred requests:

* ``test_core_matrix``: every operation x dtype x byte order (60 cases); selection,
  axis, compression, shuffle, missing data and array order rotate with the case.
* ``test_option_matrix``: every selection (none/with) x axis (none/with) x
  compression (none/gzip/zlib) x shuffle (off/on) x missing kind (6) (144 cases),
  each running all five operations; dtype, byte order and order rotate.

Every chunk sits inside its object after a 9-byte header (an unaligned offset) and
before a trailer, so ``offset``/``size`` are always exercised.
"""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
import pytest
from activestorage import reductionist

OPERATIONS = ("count", "min", "max", "sum", "select")
DTYPES = ("int32", "int64", "uint32", "uint64", "float32", "float64")
BYTE_ORDERS = ("little", "big")
COMPRESSIONS = (None, "gzip", "zlib")
MISSING_KINDS = (
    "none",
    "missing_value",
    "missing_values",
    "valid_min",
    "valid_max",
    "valid_range",
)
SHAPE = (4, 5, 6)
PREFIX = b"HDR\x00junk!"  # 9 bytes: the chunk starts at an unaligned offset
SUFFIX = b"trailer"
SELECTIONS: dict[str, Any] = {
    "none": None,
    "slices": (slice(1, 4, 1), slice(0, 5, 2), slice(5, 0, -2)),
    "mixed": (slice(0, 4, 3), 1, slice(-6, 6, 1)),
}
AXES: list[Any] = [1, (0, 2), (), (0, 1, 2), (2,)]


# -- data and reference -------------------------------------------------------------------


def sentinels(dtype: str) -> tuple[int | float, int | float]:
    """Two values planted in the data, used as missing values (never 0: PyActiveStorage
    tests missing values for truth)."""
    return (77.5, 66.25) if dtype.startswith("float") else (77, 66)


def valid_bounds(dtype: str) -> tuple[int | float, int | float]:
    if dtype.startswith("float"):
        return -20.5, 30.25
    return (20, 60) if dtype.startswith("uint") else (-20, 30)


def make_array(dtype: str) -> np.ndarray:
    """Deterministic data of ``SHAPE``, with a missing-value slab and a missing row."""
    rng = np.random.default_rng(DTYPES.index(dtype))
    if dtype.startswith("uint"):
        a = rng.integers(1, 100, SHAPE)
    elif dtype.startswith("int"):
        a = rng.integers(-50, 50, SHAPE)
    else:
        a = rng.normal(0.0, 40.0, SHAPE).round(2)
    a = a.astype(dtype)
    s1, s2 = sentinels(dtype)
    a[0, :, 0] = s1  # a whole line along axis 1: reductions over it see only missing data
    a[1, 2, :] = s2
    a[3, 4, 5] = s1
    return a


def missing_tuple(kind: str, dtype: str) -> tuple[Any, Any, Any, Any]:
    """PyActiveStorage's (fill_value, missing_value, valid_min, valid_max)."""
    s1, s2 = sentinels(dtype)
    lo, hi = valid_bounds(dtype)
    return {
        "none": (None, None, None, None),
        "missing_value": (None, s1, None, None),
        "missing_values": (None, [s1, s2], None, None),
        "valid_min": (None, None, lo, None),
        "valid_max": (None, None, None, hi),
        "valid_range": (None, None, lo, hi),
    }[kind]


def missing_mask(a: np.ndarray, kind: str, dtype: str) -> np.ndarray:
    """True where an element is missing (the reference's own formulas)."""
    s1, s2 = (a.dtype.type(v) for v in sentinels(dtype))
    lo, hi = (a.dtype.type(v) for v in valid_bounds(dtype))
    if kind == "none":
        return np.zeros(a.shape, bool)
    if kind == "missing_value":
        return a == s1
    if kind == "missing_values":
        return (a == s1) | (a == s2)
    if kind == "valid_min":
        return a < lo
    if kind == "valid_max":
        return a > hi
    return (a < lo) | (a > hi)


def as_slices(selection: Any) -> tuple[slice, ...] | None:
    if selection is None:
        return None
    return tuple(s if isinstance(s, slice) else slice(s, s + 1, 1) for s in selection)


def reference(
    op: str, a: np.ndarray, selection: Any, axis: Any, kind: str, order: str
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """Expected (flat values, shape, flat counts) computed with numpy.ma."""
    sel = as_slices(selection)
    s = a[sel] if sel is not None else a
    mask = missing_mask(s, kind, a.dtype.name)
    if op == "select":
        return s.ravel(order=order), s.shape, np.array([np.count_nonzero(~mask)])
    if axis == ():
        counts = (~mask).astype(np.int64)
        values = counts if op == "count" else s
        if op == "count":  # Reductionist's count maps the array in C order, untransposed
            order = "C"
        return values.ravel(order=order), s.shape, counts.ravel(order=order)
    ax = (axis,) if isinstance(axis, int) else axis
    m = np.ma.masked_array(s, mask)
    counts = np.asarray(m.count(axis=ax), dtype=np.int64)
    info = np.iinfo(s.dtype) if s.dtype.kind in "iu" else np.finfo(s.dtype)
    if op == "count":
        values = counts
    elif op == "sum":
        values = np.ma.filled(m.sum(axis=ax, dtype=s.dtype), 0)
    elif op == "min":
        values = np.ma.filled(m.min(axis=ax), info.max)
    else:
        values = np.ma.filled(m.max(axis=ax), info.min)
    values = np.asarray(values, dtype=np.int64 if op == "count" else s.dtype)
    return values.ravel(), values.shape, counts.ravel()


def encode(
    a: np.ndarray, byte_order: str, order: str, compression: str | None, shuffle: bool
) -> bytes:
    """The chunk bytes as a Zarr/HDF5 writer stores them: filters first, then compression."""
    stored = a.astype(a.dtype.newbyteorder("<" if byte_order == "little" else ">"))
    raw: bytes = stored.tobytes(order=order)
    if shuffle:
        raw = bytes(numcodecs.Shuffle(a.dtype.itemsize).encode(raw))
    if compression == "gzip":
        raw = bytes(numcodecs.GZip(level=1).encode(raw))
    elif compression == "zlib":
        raw = bytes(numcodecs.Zlib(level=1).encode(raw))
    return raw


# -- fixtures and the call ------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(active_store: Any) -> Any:
    """PyActiveStorage's requests session, with the S3 credentials as HTTP Basic auth."""
    s = reductionist.get_session(active_store.access_key, active_store.secret_key, None)
    s.trust_env = False
    yield s
    s.close()


@pytest.fixture(scope="module")
def chunk(put_object: Any) -> Any:
    """``chunk(dtype, byte_order, order, compression, shuffle) -> (url, offset, size)``."""
    cache: dict[tuple[Any, ...], tuple[str, int, int]] = {}

    def get(*key: Any) -> tuple[str, int, int]:
        if key not in cache:
            dtype, byte_order, order, compression, shuffle = key
            raw = encode(make_array(dtype), byte_order, order, compression, shuffle)
            name = f"matrix/{dtype}-{byte_order}-{order}-{compression}-{int(shuffle)}.bin"
            cache[key] = (put_object(name, PREFIX + raw + SUFFIX), len(PREFIX), len(raw))
        return cache[key]

    return get


def check(
    server: Any,
    session: Any,
    chunk: Any,
    *,
    op: str,
    dtype: str,
    byte_order: str,
    order: str,
    selection: Any,
    axis: Any,
    compression: str | None,
    shuffle: bool,
    kind: str,
) -> None:
    """One reduce_chunk call, compared with the reference."""
    url, offset, size = chunk(dtype, byte_order, order, compression, shuffle)
    codec = {None: None, "gzip": numcodecs.GZip(), "zlib": numcodecs.Zlib()}[compression]
    filters = [numcodecs.Shuffle(np.dtype(dtype).itemsize)] if shuffle else None
    dt = np.dtype(dtype).newbyteorder("<" if byte_order == "little" else ">")
    result, count = reductionist.reduce_chunk(
        session,
        server.url,
        url,
        offset,
        size,
        codec,
        filters,
        missing_tuple(kind, dtype),
        dt,
        SHAPE,
        order,
        selection,
        axis,
        op,
    )
    a = make_array(dtype)
    exp_values, exp_shape, exp_counts = reference(op, a, selection, axis, kind, order)
    data = np.ma.getdata(result)
    where = f"{op} {dtype} {byte_order} {order} sel={selection} axis={axis} {compression} "
    where += f"shuffle={shuffle} missing={kind}"
    assert data.shape == exp_shape, where
    assert data.dtype == (np.int64 if op == "count" else np.dtype(dtype)), where
    if data.dtype.kind == "f":
        tol = 1e-3 if dtype == "float32" else 1e-9
        np.testing.assert_allclose(data.ravel(), exp_values, rtol=tol, atol=tol, err_msg=where)
    else:
        np.testing.assert_array_equal(data.ravel(), exp_values, err_msg=where)
    assert list(count) == exp_counts.tolist(), where


# -- the matrices ----------------------------------------------------------------------------

CORE = [(op, dt, bo) for op in OPERATIONS for dt in DTYPES for bo in BYTE_ORDERS]


@pytest.mark.parametrize(
    ("i", "op", "dtype", "byte_order"),
    [(i, *c) for i, c in enumerate(CORE)],
    ids=[f"{op}-{dt}-{bo}" for op, dt, bo in CORE],
)
def test_core_matrix(
    active_server: Any, session: Any, chunk: Any, i: int, op: str, dtype: str, byte_order: str
) -> None:
    check(
        active_server,
        session,
        chunk,
        op=op,
        dtype=dtype,
        byte_order=byte_order,
        order="CF"[(i // 4) % 2],
        selection=list(SELECTIONS.values())[i % 3],
        axis=[None, *AXES][i % 6],
        compression=COMPRESSIONS[(i // 2) % 3],
        shuffle=bool((i // 3) % 2),
        kind=MISSING_KINDS[(i // 5) % 6],
    )


OPTIONS = [
    (sel, axis, comp, shuffle, kind)
    for sel in ("none", "with")
    for axis in ("none", "with")
    for comp in COMPRESSIONS
    for shuffle in (False, True)
    for kind in MISSING_KINDS
]


@pytest.mark.parametrize(
    ("i", "sel", "axis", "compression", "shuffle", "kind"),
    [(i, *o) for i, o in enumerate(OPTIONS)],
    ids=[
        f"sel_{s}-axis_{a}-{c or 'raw'}-{'shuffle' if sh else 'noshuffle'}-{k}"
        for s, a, c, sh, k in OPTIONS
    ],
)
def test_option_matrix(
    active_server: Any,
    session: Any,
    chunk: Any,
    i: int,
    sel: str,
    axis: str,
    compression: str | None,
    shuffle: bool,
    kind: str,
) -> None:
    dtype = DTYPES[(i + i // 6) % 6]  # every missing kind meets every dtype
    for op in OPERATIONS:
        check(
            active_server,
            session,
            chunk,
            op=op,
            dtype=dtype,
            byte_order=BYTE_ORDERS[(i // 6) % 2],
            order="CF"[(i // 12) % 2],
            selection=None if sel == "none" else (SELECTIONS["slices"], SELECTIONS["mixed"])[i % 2],
            axis=None if axis == "none" else AXES[i % len(AXES)],
            compression=compression,
            shuffle=shuffle,
            kind=kind,
        )
