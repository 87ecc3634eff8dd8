"""Variable-length data in chunk objects: each element is a 4-byte little-endian byte
count followed by that many bytes (UTF-8 for strings), as HSDS writes them.
Compound elements with variable-length members encode member by member; a string
member decodes to bytes (as h5py and h5netcdf read it), a top-level UTF-8 string to str.
A sequence of compounds that hold variable-length members is, after its byte count,
its records encoded member by member (HSDS's h5json ``copyElement``/``readElement``).
An object reference is, wherever it is (a whole chunk, a compound member, a sequence),
a fixed 48-byte NUL-padded ``collection/id`` field: the only layout HSDS reads (h5json's
reference dtype is ``S48``). Chunks of earlier h5dask versions held a reference as a byte
count and the bare id: ``decode_vlen(..., legacy_refs=True)`` reads those. Both parses
are strict; bytes that read both ways (only sequences of null references can) are
decided by the dataset's :data:`REF_LAYOUT_KEY` (see ``ChunkCodec._decode_refs``).

>>> from h5dask.format.types import VLEN_STR
>>> a = np.array(["a", "héllo"], dtype=VLEN_STR)
>>> decode_vlen(encode_vlen(a), VLEN_STR, 2).tolist()
['a', 'héllo']
"""

from __future__ import annotations

import struct

import numpy as np

from .ids import REFERENCE_COLLECTIONS, reference_id

_LEN = struct.Struct("<I")
#: HSDS's size of an object reference in binary data ("datasets/d-...", NUL-padded)
REF_SIZE = 48
#: key of a dataset's JSON (HSDS ignores it) saying how references inside its sequences
#: are laid out: h5dask writes :data:`REF_LAYOUT_HSDS` for every type holding references.
#: A sequence of k null references is 48k zero bytes, and the layout of earlier h5dask
#: (4 zero bytes each) reads the same bytes as 12k: only this key tells them apart.
REF_LAYOUT_KEY = "h5daskRefLayout"
REF_LAYOUT_HSDS = "hsds-48"
REF_LAYOUT_LEGACY = "h5dask-length-prefixed"


def is_ref(dt: np.dtype) -> bool:
    return dt.kind == "O" and "ref" in (dt.metadata or {})


def has_refs(dt: np.dtype) -> bool:
    """True if values of ``dt`` are (or contain) object references."""
    if dt.names:
        return any(has_refs(dt.fields[n][0]) for n in dt.names)
    if dt.subdtype is not None:
        return has_refs(dt.subdtype[0])
    vlen = (dt.metadata or {}).get("vlen")
    return is_ref(dt) or (isinstance(vlen, np.dtype) and has_refs(vlen))


def ref_field(x: object) -> bytes:
    """One object reference as HSDS stores it: ``collection/id`` NUL-padded to 48 bytes,
    all NULs for a null reference (raises InvalidReferenceError for a non-reference).

    >>> ref_field("g-0a1b2c3d-4e5f6a7b-8c9d-0e1f2a-3b4c5d")[:10]
    b'groups/g-0'
    """
    obj_id = reference_id(x)
    text = f"{REFERENCE_COLLECTIONS[obj_id[0]]}/{obj_id}" if obj_id else ""
    return text.encode("ascii").ljust(REF_SIZE, b"\0")


def _ref_value(field: bytes) -> str:
    """The id alone, as h5dask reads every reference ("datasets/d-..." -> "d-..."), of
    one 48-byte field; ValueError unless it is exactly what HSDS writes: ASCII text (a
    valid id, with or without its own collection's prefix) then only NULs, or all NULs
    (null). Strict, because the bytes of another layout (or damage) must not pass as
    references: :meth:`ChunkCodec.decode` then tries the layout earlier h5dask wrote."""
    text, _, pad = field.partition(b"\0")
    if pad.strip(b"\0"):
        raise ValueError(f"object reference field {field!r} has bytes after its NUL padding")
    if not text:
        return ""
    try:
        return reference_id(text.decode("ascii"))
    except ValueError as exc:  # InvalidReferenceError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"object reference field {field!r} is not an HSDS reference "
                         "('collection/id', NUL-padded)") from exc


def _encode_one(x: object, dt: np.dtype, out: bytearray, legacy_refs: bool = False) -> None:
    if dt.names:
        for n in dt.names:
            _encode_one(x[n], dt.fields[n][0], out, legacy_refs)  # type: ignore[index]
        return
    if dt.subdtype is not None and dt.hasobject:  # an array member of references
        for item in np.asarray(x, dtype=dt.base).reshape(-1):
            _encode_one(item, dt.base, out, legacy_refs)
        return
    if is_ref(dt) and not legacy_refs:
        out += ref_field(x)
        return
    if dt.kind != "O":
        out += np.asarray(x, dtype=dt).tobytes()
        return
    vlen = (dt.metadata or {}).get("vlen")
    if vlen is str or vlen is bytes:
        if x is None:
            b = b""
        elif isinstance(x, str):
            b = x.encode("utf-8")
        else:
            b = bytes(x)  # type: ignore[arg-type]
    elif isinstance(vlen, np.dtype):
        b = _encode_sequence(x, vlen, legacy_refs)
    elif is_ref(dt):  # legacy_refs: the bare id after its byte count
        b = reference_id(x).encode("ascii")
    else:
        raise ValueError(f"cannot encode {x!r} as {dt}")
    out += _LEN.pack(len(b))
    out += b


def _encode_sequence(x: object, base: np.dtype, legacy_refs: bool = False) -> bytes:
    """The bytes of one variable-length sequence, without its byte count."""
    seq = np.asarray(x if x is not None else [], dtype=base)
    if not base.hasobject:
        return np.ascontiguousarray(seq).tobytes()
    # records with variable-length members: their raw bytes would be object pointers
    out = bytearray()
    for record in seq.reshape(-1):
        _encode_one(record, base, out, legacy_refs)
    return bytes(out)


def encode_vlen(arr: np.ndarray, legacy_refs: bool = False) -> bytes:
    """Encode every element of ``arr`` (C order) in HSDS's variable-length format.
    ``legacy_refs``: references inside compounds and sequences as earlier h5dask wrote
    them (a byte count and the bare id), for datasets that say they hold that layout:
    a dataset mixing both would read wrong where the bytes fit both."""
    out = bytearray()
    dt = arr.dtype
    top_ref = is_ref(dt)  # whole references were 48-byte fields in that version too
    for x in arr.reshape(-1):
        _encode_one(x, dt, out, legacy_refs and not top_ref)
    return bytes(out)


def _decode_one(buf: memoryview, pos: int, dt: np.dtype, member: bool = False,
                legacy_refs: bool = False) -> tuple[object, int]:
    if dt.names:
        values = []
        for n in dt.names:
            v, pos = _decode_one(buf, pos, dt.fields[n][0], True, legacy_refs)
            values.append(v)
        return tuple(values), pos
    if dt.subdtype is not None and dt.hasobject:  # an array member of references
        base, shape = dt.subdtype
        items = np.empty(int(np.prod(shape)), dtype=base)
        for i in range(items.size):
            items[i], pos = _decode_one(buf, pos, base, True, legacy_refs)
        return items.reshape(shape), pos
    if is_ref(dt) and not legacy_refs:
        end = pos + REF_SIZE
        if end > len(buf):
            raise ValueError("variable-length data ends inside an object reference")
        return _ref_value(bytes(buf[pos:end])), end
    if dt.kind != "O":
        end = pos + dt.itemsize
        if end > len(buf):
            raise ValueError("variable-length data ends inside an element")
        return np.frombuffer(buf[pos:end], dtype=dt)[0], end
    if pos + 4 > len(buf):
        raise ValueError("variable-length data ends inside a length field")
    (n,) = _LEN.unpack_from(buf, pos)
    pos += 4
    if pos + n > len(buf):
        raise ValueError(f"variable-length element of {n} bytes runs past the chunk's end")
    raw = bytes(buf[pos:pos + n])
    vlen = (dt.metadata or {}).get("vlen")
    if vlen is str and not member:  # compound members stay bytes, as h5py reads them
        value: object = raw.decode("utf-8", errors="surrogateescape")
    elif isinstance(vlen, np.dtype) and vlen.hasobject:
        value = _decode_records(raw, vlen, legacy_refs)
    elif isinstance(vlen, np.dtype):  # in native byte order, as h5py reads sequences
        value = np.frombuffer(raw, dtype=vlen).astype(vlen.newbyteorder("="))
    elif vlen is bytes or vlen is str:
        value = raw
    else:
        value = raw.decode("utf-8")
    return value, pos + n


def _decode_records(raw: bytes, base: np.dtype, legacy_refs: bool = False) -> np.ndarray:
    """A sequence of records with variable-length members: decoded one by one until its
    bytes are used up (the byte count does not say how many records there are)."""
    buf = memoryview(raw)
    records, pos = [], 0
    while pos < len(buf):
        record, end = _decode_one(buf, pos, base, True, legacy_refs)
        if end <= pos:  # records of no bytes (e.g. an empty array member): endless
            raise ValueError(f"a sequence of {base} records that take no bytes holds "
                             f"{len(buf)} bytes")
        records.append(record)
        pos = end
    out = np.empty(len(records), dtype=base.newbyteorder("="))
    for i, record in enumerate(records):
        out[i] = record
    return out


def decode_vlen(data: bytes, dt: np.dtype, count: int,
                legacy_refs: bool = False) -> np.ndarray:
    """Decode ``count`` elements; raises ValueError if the bytes do not fit exactly.
    ``legacy_refs``: references as earlier h5dask versions wrote them (a byte count and
    the bare id) instead of HSDS's fixed 48-byte fields."""
    buf = memoryview(data)
    out = np.empty(count, dtype=dt)
    pos = 0
    for i in range(count):
        out[i], pos = _decode_one(buf, pos, dt, False, legacy_refs)
    if pos != len(buf):
        raise ValueError(f"{len(buf) - pos} bytes left over after {count} elements")
    return out
