"""Generic comparison of a domain as h5pyd (through HSDS) and h5dask (from storage) see it.

Both libraries follow h5py's conventions (special dtypes carry ``vlen``/``enum``/``ref``
metadata), so every object, link, attribute and dataset property of the whole tree is
compared directly, without knowing what the tree holds.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np


def fresh_name(prefix: str) -> str:
    """A domain name HSDS has never seen (it caches domain metadata by name)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}.h5"


def dtype_metadata(dt: np.dtype) -> Any:
    """The h5py-style special-type metadata of ``dt`` (recursing into fields/sub-arrays)."""
    if dt.names:
        return {n: dtype_metadata(dt.fields[n][0]) for n in dt.names}
    if dt.subdtype is not None:
        return ("array", dt.subdtype[1], dtype_metadata(dt.subdtype[0]))
    meta = dict(dt.metadata or {})
    out: dict[str, Any] = {}
    if "vlen" in meta:
        vlen = meta["vlen"]
        out["vlen"] = vlen if vlen in (str, bytes) else np.dtype(vlen).str
    if "enum" in meta:
        out["enum"] = {str(k): int(v) for k, v in meta["enum"].items()}
    if "ref" in meta:
        out["ref"] = True
    return out


def assert_dtype_equal(got: np.dtype, want: np.dtype, what: str) -> None:
    got, want = np.dtype(got), np.dtype(want)
    assert got == want, f"{what}: dtype {got!r} != {want!r}"
    assert got.str == want.str, f"{what}: byte order/size {got.str} != {want.str}"
    assert dtype_metadata(got) == dtype_metadata(want), (
        f"{what}: special type {dtype_metadata(got)} != {dtype_metadata(want)}")


def _plain(value: Any) -> Any:
    """Nested Python values, with vlen members (arrays) as lists, for equality checks."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O" or value.dtype.names:
            return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value[()])
        return value.tolist()
    if isinstance(value, np.void) and value.dtype.names:
        return tuple(_plain(value[n]) for n in value.dtype.names)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_values_equal(got: Any, want: Any, what: str) -> None:
    """Same type of container, same dtype (if numpy), same values (NaN equal to NaN)."""
    if isinstance(want, np.ndarray | np.generic):
        assert isinstance(got, np.ndarray | np.generic), (
            f"{what}: got {type(got).__name__}, want numpy {type(want).__name__}")
        assert np.shape(got) == np.shape(want), f"{what}: shape {np.shape(got)} != {np.shape(want)}"
        assert_dtype_equal(got.dtype, want.dtype, what)
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(got, want, err_msg=what)
            return
        assert _plain(got) == _plain(want), f"{what}: {got!r} != {want!r}"
        return
    assert type(got) is type(want), f"{what}: {type(got).__name__} != {type(want).__name__}"
    assert got == want, f"{what}: {got!r} != {want!r}"


def h5pyd_attribute_dtype(obj: Any, name: str) -> np.dtype:
    """The stored dtype of an attribute as h5pyd derives it from the attribute's JSON
    (values of vlen strings come back as ``str``, so the value alone does not tell)."""
    db = obj.id.db
    return db.getDtype(db.getAttribute(obj.id.uuid, name))


def assert_attrs_equal(got: Any, want: Any, what: str) -> int:
    """Every attribute of two objects: same names, values and stored dtypes.

    Returns how many were compared."""
    a_got, a_want = got.attrs, want.attrs
    assert sorted(a_got) == sorted(a_want), f"{what}: attributes {sorted(a_got)} != " \
        f"{sorted(a_want)}"
    for name in a_want:
        where = f"{what} attribute {name!r}"
        assert_dtype_equal(a_got.dtype_of(name), h5pyd_attribute_dtype(want, name), where)
        assert_values_equal(a_got[name], a_want[name], where)
    return len(a_want)


def link_kind(group: Any, name: str) -> tuple:
    link = group.get(name, getlink=True)
    kind = type(link).__name__
    if kind == "SoftLink":
        return ("soft", link.path)
    if kind == "ExternalLink":
        return ("external", link.filename, link.path)
    return ("hard",)


def assert_dataset_equal(got: Any, want: Any, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert_dtype_equal(got.dtype, want.dtype, what)
    assert got.chunks == want.chunks, f"{what}: chunks {got.chunks} != {want.chunks}"
    assert got.maxshape == want.maxshape, f"{what}: maxshape {got.maxshape} != {want.maxshape}"
    assert got.compression == want.compression, (
        f"{what}: compression {got.compression} != {want.compression}")
    assert bool(got.shuffle) == bool(want.shuffle), f"{what}: shuffle differs"
    if want.dtype.kind != "O":  # h5pyd's default vlen fill is np.zeros(1, object)[0] == 0
        assert_values_equal(got.fillvalue, want.fillvalue, f"{what} fillvalue")
    if want.shape is None:
        return
    # like h5py, h5pyd and h5dask read variable-length strings of datasets as bytes
    # unless asked for str with .asstr()
    assert_values_equal(got[()], want[()], f"{what} values")
    if (want.dtype.metadata or {}).get("vlen") is str:
        assert_values_equal(got.asstr()[()], want.asstr()[()], f"{what} asstr values")


def assert_trees_equal(got: Any, want: Any) -> dict[str, int]:
    """Walk ``want`` (h5pyd) from the root; ``got`` (h5dask) must hold the same tree.

    Returns counts of what was compared (groups, datasets, attributes, soft links).
    """
    counts = dict.fromkeys(("groups", "datasets", "attributes", "soft links"), 0)
    seen: set[str] = set()
    pending = ["/"]
    while pending:
        path = pending.pop()
        g_got, g_want = got[path], want[path]
        counts["groups"] += 1
        counts["attributes"] += assert_attrs_equal(g_got, g_want, path)
        assert sorted(g_got) == sorted(g_want), f"{path}: members {sorted(g_got)} != " \
            f"{sorted(g_want)}"
        for name in g_want:
            child = f"{path.rstrip('/')}/{name}"
            kind = link_kind(g_want, name)
            assert link_kind(g_got, name) == kind, f"{child}: link {link_kind(g_got, name)}"
            if kind[0] != "hard":
                counts["soft links"] += 1
                # the link resolves to the same object in both
                assert g_got[name].id == g_want[name].id.id, f"{child}: link target differs"
                continue
            o_want = g_want[name]
            if o_want.id.id in seen:
                continue
            seen.add(o_want.id.id)
            o_got = g_got[name]
            assert o_got.id == o_want.id.id, f"{child}: id {o_got.id} != {o_want.id.id}"
            if type(o_want).__name__ == "Group":
                assert type(o_got).__name__ == "Group", f"{child}: not a group in h5dask"
                pending.append(child)
            else:
                assert type(o_got).__name__ == "Dataset", f"{child}: not a dataset in h5dask"
                counts["datasets"] += 1
                counts["attributes"] += assert_attrs_equal(o_got, o_want, child)
                assert_dataset_equal(o_got, o_want, child)
    return counts
