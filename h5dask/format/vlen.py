"""Variable-length data in chunk objects: each element is a 4-byte little-endian byte
count followed by that many bytes (UTF-8 for strings), as HSDS writes them.
Compound elements with variable-length members encode member by member; a string
member decodes to bytes (as h5py and h5netcdf read it), a top-level UTF-8 string to str.
A sequence of compounds that hold variable-length members is, after its byte count,
its records encoded member by member (HSDS's h5json ``copyElement``/``readElement``).

>>> from h5dask.format.types import VLEN_STR
>>> a = np.array(["a", "héllo"], dtype=VLEN_STR)
>>> decode_vlen(encode_vlen(a), VLEN_STR, 2).tolist()
['a', 'héllo']
"""

from __future__ import annotations

import struct

import numpy as np

from .ids import reference_id

_LEN = struct.Struct("<I")


def _encode_one(x: object, dt: np.dtype, out: bytearray) -> None:
    if dt.names:
        for n in dt.names:
            _encode_one(x[n], dt.fields[n][0], out)  # type: ignore[index]
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
        b = _encode_sequence(x, vlen)
    else:
        b = reference_id(x).encode("ascii")  # references: ids ("" is null)
    out += _LEN.pack(len(b))
    out += b


def _encode_sequence(x: object, base: np.dtype) -> bytes:
    """The bytes of one variable-length sequence, without its byte count."""
    seq = np.asarray(x if x is not None else [], dtype=base)
    if not base.hasobject:
        return np.ascontiguousarray(seq).tobytes()
    # records with variable-length members: their raw bytes would be object pointers
    out = bytearray()
    for record in seq.reshape(-1):
        _encode_one(record, base, out)
    return bytes(out)


def encode_vlen(arr: np.ndarray) -> bytes:
    """Encode every element of ``arr`` (C order) in HSDS's variable-length format."""
    out = bytearray()
    dt = arr.dtype
    for x in arr.reshape(-1):
        _encode_one(x, dt, out)
    return bytes(out)


def _decode_one(buf: memoryview, pos: int, dt: np.dtype,
                member: bool = False) -> tuple[object, int]:
    if dt.names:
        values = []
        for n in dt.names:
            v, pos = _decode_one(buf, pos, dt.fields[n][0], member=True)
            values.append(v)
        return tuple(values), pos
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
        value = _decode_records(raw, vlen)
    elif isinstance(vlen, np.dtype):  # in native byte order, as h5py reads sequences
        value = np.frombuffer(raw, dtype=vlen).astype(vlen.newbyteorder("="))
    elif vlen is bytes or vlen is str:
        value = raw
    else:
        value = raw.decode("utf-8")
    return value, pos + n


def _decode_records(raw: bytes, base: np.dtype) -> np.ndarray:
    """A sequence of records with variable-length members: decoded one by one until its
    bytes are used up (the byte count does not say how many records there are)."""
    buf = memoryview(raw)
    records, pos = [], 0
    while pos < len(buf):
        record, pos = _decode_one(buf, pos, base, member=True)
        records.append(record)
    out = np.empty(len(records), dtype=base.newbyteorder("="))
    for i, record in enumerate(records):
        out[i] = record
    return out


def decode_vlen(data: bytes, dt: np.dtype, count: int) -> np.ndarray:
    """Decode ``count`` elements; raises ValueError if the bytes do not fit exactly."""
    buf = memoryview(data)
    out = np.empty(count, dtype=dt)
    pos = 0
    for i in range(count):
        out[i], pos = _decode_one(buf, pos, dt)
    if pos != len(buf):
        raise ValueError(f"{len(buf) - pos} bytes left over after {count} elements")
    return out
