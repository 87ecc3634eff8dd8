"""netCDF-4 conventions on HDF5, read as h5netcdf reads them.

- Dimension scales (``CLASS="DIMENSION_SCALE"``) define a group's dimensions; one whose
  ``NAME`` says "This is a netCDF dimension but not a netCDF variable" is a dimension
  only, not a variable.
- A variable's dimensions come from ``_Netcdf4Coordinates`` (for multi-dimensional
  coordinate variables), else ``DIMENSION_LIST`` (the last scale attached to each axis),
  else its own name if it is a scale, else ``phony_dim_N`` names.
- The netCDF-internal attributes are hidden; attribute values are normalised as
  h5netcdf does (fixed strings decoded, one-element arrays unwrapped, string arrays as
  lists).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidGroupPathError
from ..format.metadata import DatasetMeta, GroupMeta

NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable"
HIDDEN_ATTRS = frozenset({
    "REFERENCE_LIST", "CLASS", "DIMENSION_LIST", "NAME", "_Netcdf4Dimid",
    "_Netcdf4Coordinates", "_nc3_strict", "_NCProperties",
})
NON_COORD_PREFIX = "_nc4_non_coord_"


def group_path(group: Any) -> str:
    """A ``group=`` argument as an absolute group path: None, "" and "/" are the root;
    a leading or trailing "/" is optional; every name between must be a real name.

    >>> group_path("a/b/"), group_path(None)
    ('/a/b', '/')
    """
    if group is None:
        return "/"
    if not isinstance(group, str):
        raise InvalidGroupPathError(
            f"group={group!r}: a group is named by a path string such as '/a/b', not "
            f"{type(group).__name__}")
    names = group.strip("/").split("/") if group.strip("/") else []
    bad = [name for name in names if name in ("", ".", "..")]
    if bad:
        raise InvalidGroupPathError(
            f"group={group!r} is not a valid group path: it has the name {bad[0]!r} between "
            "two '/'; name groups like '/a/b' (no empty names, no '.' or '..')")
    return "/" + "/".join(names)


def _as_text(value: Any) -> str | None:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return value
    return None


def is_dimension_scale(attrs: dict[str, Any]) -> bool:
    return _as_text(attrs.get("CLASS")) == "DIMENSION_SCALE"


def is_dimension_only(attrs: dict[str, Any]) -> bool:
    """A dataset that is a netCDF dimension but not a netCDF variable."""
    name = _as_text(attrs.get("NAME"))
    return name is not None and NOT_A_VARIABLE in name


def normalize_attribute(value: Any, dtype: np.dtype, null: bool) -> Any:
    """An attribute value as h5netcdf returns it."""
    if null:
        if dtype.kind == "S" and dtype.itemsize == 1:
            return b""
        return np.array([], dtype=dtype if dtype.kind != "O" else object)
    is_str = dtype.kind == "S" or (dtype.kind == "O" and (dtype.metadata or {}).get("vlen") in (
        str, bytes))
    if is_str:
        if dtype.kind == "S" and dtype.itemsize > 1:
            if np.ndim(value) == 0:
                value = bytes(value).decode("utf-8", "surrogateescape")
            else:
                value = [bytes(b).decode("utf-8", "surrogateescape") for b in np.asarray(
                    value).flat]
        elif np.ndim(value) != 0:
            value = np.asarray(value).tolist()
        if isinstance(value, bytes) and dtype.kind == "O":
            value = value.decode("utf-8", "surrogateescape")
    if not np.isscalar(value) and not isinstance(value, str | bytes) and len(value) == 1:
        return value[0]
    return value


@dataclass
class GroupDimensions:
    """The dimensions visible in one group: name -> (size, dimid), in order."""

    names: dict[str, int] = field(default_factory=dict)  # name -> size
    dimids: dict[int, str] = field(default_factory=dict)
    phony: list[str] = field(default_factory=list)


def _int_list(value: Any) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def variable_dimensions(
    name: str,
    meta: DatasetMeta,
    attrs: dict[str, Any],
    scope: list[GroupDimensions],
    id_to_name: dict[str, str],
    phony_names: dict[int, list[str]],
) -> tuple[str, ...]:
    """The dimension names of one variable (see the module doc for the order of rules)."""
    shape = meta.shape or ()
    if "_Netcdf4Coordinates" in attrs and is_dimension_scale(attrs):
        by_id: dict[int, str] = {}
        for dims in reversed(scope):
            by_id.update(dims.dimids)
        try:
            return tuple(by_id[i] for i in _int_list(attrs["_Netcdf4Coordinates"]))
        except KeyError:
            pass  # a dangling dimid: fall back to the other rules
    dim_list = attrs.get("DIMENSION_LIST")
    if dim_list is not None and len(dim_list) == len(shape):
        axes = [list(np.asarray(refs, dtype=object).reshape(-1)) for refs in dim_list]
        if all(axes):
            names = []
            for refs in axes:
                ref = _ref_id(refs[-1])
                names.append(id_to_name.get(ref, ref).split("/")[-1])
            return tuple(names)
    if any(name in dims.names for dims in scope) and is_dimension_scale(attrs):
        return (name,)
    counts: Counter[int] = Counter()
    out = []
    for size in shape:
        candidates = phony_names.get(size, [])
        n = counts[size]
        counts[size] += 1
        out.append(candidates[n] if n < len(candidates) else f"phony_dim_{size}_{n}")
    return tuple(out)


def _ref_id(ref: Any) -> str:
    text = _as_text(ref) or str(ref)
    return text.split("/")[-1]  # "datasets/d-..." or "d-..."


def group_dimensions(group: GroupMeta, members: dict[str, DatasetMeta],
                     attrs_of: dict[str, dict[str, Any]]) -> GroupDimensions:
    """Dimensions defined by the scales of one group, in member order."""
    dims = GroupDimensions()
    for name, meta in members.items():
        attrs = attrs_of[name]
        if is_dimension_scale(attrs) and meta.shape:
            dims.names[name] = meta.shape[0]
            if "_Netcdf4Dimid" in attrs:
                dims.dimids[int(np.asarray(attrs["_Netcdf4Dimid"]).reshape(-1)[0])] = name
    return dims


def unlabeled(attrs: dict[str, Any], meta: DatasetMeta) -> bool:
    dim_list = attrs.get("DIMENSION_LIST")
    if dim_list is None:
        return True
    return not all(len(np.asarray(r, dtype=object).reshape(-1)) for r in dim_list)


def phony_dimensions(dims: GroupDimensions, members: dict[str, DatasetMeta],
                     attrs_of: dict[str, dict[str, Any]], counter: list[int],
                     offset: int) -> dict[int, list[str]]:
    """Names for axes without scales, as h5netcdf's ``phony_dims="sort"`` gives them:
    a group reuses its labelled dimensions of the same size first, then creates
    ``phony_dim_<n>`` (n counting across the file from ``offset``)."""
    needed: Counter[int] = Counter()
    for name, meta in sorted(members.items()):  # h5py's (name) order, as h5netcdf sees it
        attrs = attrs_of[name]
        if is_dimension_scale(attrs) or not unlabeled(attrs, meta):
            continue
        needed |= Counter(meta.shape or ())
    labeled = Counter(dims.names.values())
    names: dict[int, list[str]] = {}
    for dim_name, size in dims.names.items():
        names.setdefault(size, []).append(dim_name)
    for size, count in needed.items():
        for _ in range(labeled[size], count):
            phony = f"phony_dim_{counter[0] + offset}"
            counter[0] += 1
            dims.phony.append(phony)
            names.setdefault(size, []).append(phony)
    return names


def max_dimid(all_attrs: list[dict[str, Any]]) -> int:
    best = -1
    for attrs in all_attrs:
        if is_dimension_scale(attrs) and "_Netcdf4Dimid" in attrs:
            best = max(best, int(np.asarray(attrs["_Netcdf4Dimid"]).reshape(-1)[0]))
    return best


def public_attributes(raw: dict[str, tuple[Any, np.dtype, bool]]) -> dict[str, Any]:
    """Visible attributes, normalised: ``raw`` maps name -> (value, dtype, is_null)."""
    return {k: normalize_attribute(v, dt, null) for k, (v, dt, null) in raw.items()
            if k not in HIDDEN_ATTRS}
