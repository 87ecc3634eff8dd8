"""HDF5 as h5py reads it, as HSDS JSON: type ids to type JSON, values to JSON values
(object references become the new objects' ids), and the object tree behind the links.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedTypeError
from ..format.metadata import Link
from ..format.types import has_vlen
from ..format.values import opaque_json


class H5Types:
    """Converts h5py type ids to HSDS type JSON; committed types by their new ids."""

    def __init__(self, committed: dict[int, str]) -> None:
        self.committed = committed  # object address -> new datatype id

    def json(self, tid: Any, top: bool = True) -> Any:
        import h5py
        from h5py import h5t

        if top and tid.committed():
            addr = h5py.h5o.get_info(tid).addr
            new_id = self.committed.get(addr)
            if new_id is not None:
                return {**self.json(tid, top=False), "id": new_id}
        cls = tid.get_class()
        if cls == h5t.INTEGER:
            sign = "U" if tid.get_sign() == h5t.SGN_NONE else "I"
            return {"class": "H5T_INTEGER",
                    "base": f"H5T_STD_{sign}{tid.get_size() * 8}{_order(tid)}"}
        if cls == h5t.FLOAT:
            size = tid.get_size()
            std = {2: h5t.IEEE_F16LE, 4: h5t.IEEE_F32LE, 8: h5t.IEEE_F64LE}.get(size)
            be = {2: h5t.IEEE_F16BE, 4: h5t.IEEE_F32BE, 8: h5t.IEEE_F64BE}.get(size)
            if std is None or not (tid.equal(std) or tid.equal(be)):
                raise UnsupportedTypeError(f"a non-IEEE float of {size} bytes")
            return {"class": "H5T_FLOAT", "base": f"H5T_IEEE_F{size * 8}{_order(tid)}"}
        if cls == h5t.STRING:
            cset = "H5T_CSET_UTF8" if tid.get_cset() == h5t.CSET_UTF8 else "H5T_CSET_ASCII"
            pad = {h5t.STR_NULLTERM: "H5T_STR_NULLTERM", h5t.STR_NULLPAD: "H5T_STR_NULLPAD",
                   h5t.STR_SPACEPAD: "H5T_STR_SPACEPAD"}.get(tid.get_strpad(), "H5T_STR_NULLPAD")
            length = "H5T_VARIABLE" if tid.is_variable_str() else tid.get_size()
            return {"class": "H5T_STRING", "charSet": cset, "strPad": pad, "length": length}
        if cls == h5t.ENUM:
            members = [{"name": text(tid.get_member_name(i)),
                        "value": int(tid.get_member_value(i))}
                       for i in range(tid.get_nmembers())]
            return {"class": "H5T_ENUM", "base": self.json(tid.get_super(), top=False),
                    "members": members}
        if cls == h5t.COMPOUND:
            return {"class": "H5T_COMPOUND", "fields": [
                {"name": text(tid.get_member_name(i)),
                 "type": self.json(tid.get_member_type(i), top=False)}
                for i in range(tid.get_nmembers())]}
        if cls == h5t.ARRAY:
            return {"class": "H5T_ARRAY", "base": self.json(tid.get_super(), top=False),
                    "dims": [int(d) for d in tid.get_array_dims()]}
        if cls == h5t.VLEN:
            return {"class": "H5T_VLEN", "size": "H5T_VARIABLE",
                    "base": self.json(tid.get_super(), top=False)}
        if cls == h5t.REFERENCE:
            if tid.equal(h5t.STD_REF_DSETREG):
                raise UnsupportedTypeError("region references")
            return {"class": "H5T_REFERENCE", "base": "H5T_STD_REF_OBJ"}
        if cls == h5t.OPAQUE:
            out = {"class": "H5T_OPAQUE", "size": tid.get_size()}
            tag = text(tid.get_tag())
            if tag:
                out["tag"] = tag  # h5py.opaque_dtype's "NUMPY:<M8[s]" names the dtype
            return out
        raise UnsupportedTypeError(f"HDF5 type class {cls} (bitfield, time, ...)")


def _order(tid: Any) -> str:
    from h5py import h5t

    return "BE" if tid.get_order() == h5t.ORDER_BE else "LE"


def text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def filter_label(code: int) -> str:
    """An HDF5 filter id with its name, e.g. ``"sz (32017)"``, or the id alone (names:
    h5dask's codecs, then hdf5plugin's filter table)."""
    from ..format import codecs

    codec = codecs.by_hdf5_id(code)
    if codec is not None:
        return f"{codec.name} ({code})"
    try:
        import hdf5plugin

        names = {fid: name for name, fid in hdf5plugin.FILTERS.items()}
    except (ImportError, AttributeError):
        names = {}
    return f"{names[code]} ({code})" if code in names else str(code)


def missing_filters(codes: list[int]) -> list[str]:
    """The filters among ``codes`` that HDF5 (through h5py) cannot apply or undo."""
    from h5py import h5z

    return [filter_label(c) for c in codes if not h5z.filter_avail(c)]


#: where HDF5 filter ids are registered, with links to their plugins
REGISTERED_FILTERS_URL = ("https://github.com/HDFGroup/hdf5_plugins/blob/master/docs/"
                          "RegisteredFilterPlugins.md")


def missing_plugin_advice() -> str:
    """What to install for a filter HDF5 has no plugin for (see :func:`missing_filters`)."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        return ("install hdf5plugin (pip install hdf5plugin: bzip2, lz4, zstd, Blosc, "
                "Blosc2, bitshuffle, zfp, sz, ...), or that filter's HDF5 plugin in the "
                "directory HDF5_PLUGIN_PATH names")
    return ("hdf5plugin (installed) does not provide it: install that filter's HDF5 plugin "
            f"(the registered filters and their plugins: {REGISTERED_FILTERS_URL}) and set "
            "HDF5_PLUGIN_PATH to its directory")


def same_layout(tid: Any, dt: np.dtype) -> bool:
    """True if the file's bytes of one element are the bytes of ``dt`` (fixed size, no
    references, no compound padding): chunks can then be copied or linked as bytes."""
    from h5py import h5t

    if has_vlen(dt) or tid.get_size() != dt.itemsize:
        return False
    cls = tid.get_class()
    if cls == h5t.STRING and tid.get_strpad() == h5t.STR_SPACEPAD:
        return False  # HDF5 strips the padding spaces on read: the bytes are not the values
    if cls == h5t.COMPOUND:
        return all(tid.get_member_offset(i) == dt.fields[n][1] and
                   same_layout(tid.get_member_type(i), dt.fields[n][0])
                   for i, n in enumerate(dt.names or ()))
    if cls == h5t.ARRAY:
        return same_layout(tid.get_super(), dt.subdtype[0]) if dt.subdtype else False
    if cls == h5t.ENUM:
        return same_layout(tid.get_super(), dt)
    if cls in (h5t.INTEGER, h5t.BITFIELD):
        # fewer significant bits, or shifted (e.g. 12 bits from bit 4): HDF5 converts
        # them to whole integers on read, the bytes alone are other numbers
        return tid.get_precision() == 8 * tid.get_size() and tid.get_offset() == 0
    return cls != h5t.REFERENCE


class H5Values:
    """h5py values -> HSDS JSON values (references become the new objects' ids)."""

    def __init__(self, f: Any, refs: dict[int, str]) -> None:
        self.f = f
        self.refs = refs  # object address -> new id

    def ref(self, ref: Any) -> str:
        """The new id of the referenced object; ``""`` for a null reference;
        UnsupportedTypeError for an object that is not loaded (skipped, or not reachable
        from the root)."""
        import h5py

        if not ref:
            return ""
        try:
            oid = h5py.h5r.dereference(ref, self.f.id)
        except (KeyError, ValueError, OSError) as exc:  # e.g. an address past the file's end
            raise UnsupportedTypeError(f"an object reference HDF5 cannot follow ({exc})"
                                       ) from exc
        if oid is None:
            return ""
        new_id = self.refs.get(h5py.h5o.get_info(oid).addr)
        if new_id is None:
            # a null reference in its place would be another value: the object is gone
            name = h5py.h5r.get_name(ref, self.f.id)
            raise UnsupportedTypeError(
                f"an object reference to {text(name) if name else 'an unnamed object'}, "
                "which is not loaded")
        return new_id

    def nd(self, value: Any, dt: np.dtype, ndim: int) -> Any:
        """Nested lists of ``ndim`` levels (an array type's own axes stay inside)."""
        if ndim == 0:
            if isinstance(value, np.ndarray) and value.ndim == 0 and dt.subdtype is None:
                value = value[()]
            return self.one(value, dt)
        return [self.nd(v, dt, ndim - 1) for v in value]

    def one(self, x: Any, dt: np.dtype) -> Any:
        if dt.names:
            if isinstance(x, np.void | np.ndarray):
                return [self.one(x[n], dt.fields[n][0]) for n in dt.names]
            return [self.one(v, dt.fields[n][0]) for v, n in zip(x, dt.names)]
        if dt.subdtype is not None:
            base, shape = dt.subdtype
            return self.nd(np.asarray(x).reshape(shape), base, len(shape))
        meta = dt.metadata or {}
        if dt.kind == "O":
            if "ref" in meta:
                return self.ref(x)
            vlen = meta.get("vlen")
            if vlen is str or vlen is bytes:
                return text(x) if x is not None else ""
            if isinstance(vlen, np.dtype):
                return [self.one(v, vlen) for v in (x if x is not None else [])]
            raise UnsupportedTypeError(f"object values of {dt}")
        if dt.kind == "f":
            return float(x)
        if dt.kind == "c":
            return [float(np.real(x)), float(np.imag(x))]
        if dt.kind in "Mm":  # opaque, as HSDS writes (and only reads) opaque values
            return opaque_json(np.asarray(x, dtype=dt).tobytes())
        if dt.kind in "iu":
            return int(x)
        if dt.kind == "b":
            return int(bool(x))
        if dt.kind == "S":
            return bytes(x).rstrip(b"\x00").decode("utf-8", "surrogateescape")
        if dt.kind == "V":
            return opaque_json(bytes(x))
        raise UnsupportedTypeError(f"values of {dt}")

    def array(self, arr: Any, dt: np.dtype) -> np.ndarray:
        """Dataset values as an array of the domain's dtype (references -> ids)."""
        arr = np.asarray(arr)
        if not has_refs(dt):
            return arr
        out = np.empty(arr.shape, dtype=dt)
        flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
        for i in range(flat_in.size):
            flat_out[i] = self._with_ids(flat_in[i], dt)
        return out

    def _with_ids(self, x: Any, dt: np.dtype) -> Any:
        if dt.names:
            return tuple(self._with_ids(x[n], dt.fields[n][0]) for n in dt.names)
        if "ref" in (dt.metadata or {}):
            return self.ref(x)
        vlen = (dt.metadata or {}).get("vlen")
        if isinstance(vlen, np.dtype) and has_refs(vlen):
            return np.array([self._with_ids(v, vlen) for v in x], dtype=vlen)
        return x


def has_refs(dt: np.dtype) -> bool:
    if dt.names:
        return any(has_refs(dt.fields[n][0]) for n in dt.names)
    if dt.subdtype is not None:
        return has_refs(dt.subdtype[0])
    meta = dt.metadata or {}
    if "ref" in meta:
        return True
    vlen = meta.get("vlen")
    return isinstance(vlen, np.dtype) and has_refs(vlen)


# -- the source tree --------------------------------------------------------------------
@dataclass
class SourceObject:
    """One object of the source file (h5py handle) and, once created, its new id."""

    kind: str  # g, d, t
    h5: Any
    path: str
    addr: int
    new_id: str = ""
    links: list[Link] = field(default_factory=list)  # groups: soft and external links
    hard: list[tuple[str, int]] = field(default_factory=list)  # groups: name -> addr


def walk(f: Any, skipped: list[str]) -> list[SourceObject]:
    """Every object reachable from the root by hard links, breadth-first (the root
    first); soft and external links are recorded on their groups."""
    import h5py

    root = SourceObject("g", f, "/", h5py.h5o.get_info(f.id).addr)
    objects = {root.addr: root}
    queue = [root]
    while queue:
        group = queue.pop(0)
        for name in group.h5:
            where = f"{group.path.rstrip('/')}/{name}"
            try:
                link = group.h5.get(name, getlink=True)
            except Exception as exc:  # a link h5py cannot even describe
                skipped.append(f"{where}: link ({exc})")
                continue
            if isinstance(link, h5py.SoftLink):
                group.links.append(Link(name, "soft", h5path=link.path))
                continue
            if isinstance(link, h5py.ExternalLink):
                group.links.append(Link(name, "external", h5path=link.path, file=link.filename))
                continue
            if not isinstance(link, h5py.HardLink):
                skipped.append(f"{where}: user-defined link")
                continue
            try:
                obj = group.h5[name]
            except Exception as exc:
                skipped.append(f"{where}: cannot open ({exc})")
                continue
            addr = h5py.h5o.get_info(obj.id).addr
            if addr not in objects:
                kind = ("g" if isinstance(obj, h5py.Group) else
                        "d" if isinstance(obj, h5py.Dataset) else "t")
                objects[addr] = SourceObject(kind, obj, where, addr)
                if kind == "g":
                    queue.append(objects[addr])
            group.hard.append((name, addr))
    return list(objects.values())


__all__ = ["H5Types", "H5Values", "SourceObject", "filter_label", "has_refs", "missing_filters",
           "same_layout", "text", "walk"]
