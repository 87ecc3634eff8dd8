"""Filters h5dask knows by name but does not decode: szip, nbit, scaleoffset.

HSDS accepts nbit and scaleoffset without applying them, so on HSDS chunks they are
no-ops; ``h5dask load`` copies such datasets with their values decoded by HDF5.
"""

from __future__ import annotations

from .base import Codec, MappedFilters, register


@register
class Szip(Codec):
    name = "szip"
    hsds_class = "H5Z_FILTER_SZIP"
    hdf5_id = 4
    supported = False

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        out.compressor, out.level = "gzip", 4
        out.notes.append("szip -> gzip")


class _DroppedOnCopy(Codec):
    supported = False
    hsds_noop = True

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        out.notes.append(f"{self.name} dropped (values decoded)")


@register
class Nbit(_DroppedOnCopy):
    name = "nbit"
    hsds_class = "H5Z_FILTER_NBIT"
    hdf5_id = 5


@register
class ScaleOffset(_DroppedOnCopy):
    name = "scaleoffset"
    hsds_class = "H5Z_FILTER_SCALEOFFSET"
    hdf5_id = 6
