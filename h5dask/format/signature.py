"""Recognising file formats by their first bytes (for helpful errors, not for parsing).

An HDF5 file starts with ``\\x89HDF\\r\\n\\x1a\\n`` at offset 0, or after a user block at
512, 1024, 2048, ...; a netCDF classic (netCDF-3) file with ``CDF\\x01``, ``CDF\\x02`` or
``CDF\\x05``.

>>> sniff(b"\\x89HDF\\r\\n\\x1a\\n" + bytes(8))
'hdf5'
>>> sniff(b"CDF\\x01" + bytes(8))
'netcdf3'
>>> sniff(b"hello") is None
True
"""

from __future__ import annotations

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NETCDF3_MAGICS = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
#: how many leading bytes :func:`sniff` looks at (signatures at 0, 512, 1024, 2048)
HEAD_SIZE = 2048 + len(HDF5_SIGNATURE)


def sniff(head: bytes) -> str | None:
    """``'hdf5'``, ``'netcdf3'`` or None for the first :data:`HEAD_SIZE` bytes of a file."""
    head = bytes(head)
    if head[:4] in NETCDF3_MAGICS:
        return "netcdf3"
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(head):
        if head[offset:offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return "hdf5"
        offset = 512 if offset == 0 else offset * 2
    return None


def describe(kind: str | None) -> str:
    """A reader's name for what :func:`sniff` found."""
    return {"hdf5": "an HDF5/netCDF-4 file", "netcdf3": "a netCDF-3 (classic) file"}.get(
        kind or "", "not an HDF5 file")
