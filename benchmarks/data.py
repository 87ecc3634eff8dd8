"""The synthetic data set, and writing it in each contender's format into the same bucket.

One float32 variable ``v`` of shape ``(T, 1024, 1024)`` (``T`` from the size), smooth
with rounded noise so that gzip+shuffle compresses it about as much as real model output.
Three variants: 4 MiB chunks uncompressed, 4 MiB chunks gzip(4)+shuffle, 256 KiB chunks
uncompressed (a quarter of the size, still 4 times the objects). Each is written as an
h5dask domain (which HSDS serves as it is), as a Zarr v3 group with the same chunks and
codecs (Blosc zlib level 4 with byte shuffle is exactly what HSDS stores for gzip+shuffle),
and as one HDF5/netCDF-4 file.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from .common import MiB
from .services import BUCKET, Services

PLANE = (1024, 1024)
SLAB = 32  # planes written per call


@dataclass(frozen=True)
class Variant:
    slug: str
    title: str
    chunks: tuple[int, int, int]
    compressed: bool
    fraction: int = 1  # the variable is 1/fraction of the size asked for

    @property
    def chunk_bytes(self) -> int:
        return math.prod(self.chunks) * 4


VARIANTS = (
    Variant("plain", "4 MiB chunks, uncompressed", (1, 1024, 1024), False),
    Variant("gzip", "4 MiB chunks, gzip(4)+shuffle", (1, 1024, 1024), True),
    # a quarter of the size: 4x fewer bytes, 4x more objects than the 4 MiB variant (HSDS
    # and h5pyd alone would need minutes per round over 4096 small chunks)
    Variant("small", "256 KiB chunks, uncompressed", (1, 256, 256), False, fraction=4),
)


class Synthetic:
    """Deterministic planes: ``plane(t)`` is the same in every process and run."""

    def __init__(self, nplanes: int, plane: tuple[int, int] = PLANE) -> None:
        self.nplanes = nplanes
        self.plane_shape = plane
        y, x = np.meshgrid(np.arange(plane[0], dtype=np.float32),
                           np.arange(plane[1], dtype=np.float32), indexing="ij")
        self._base = (280 + 10 * np.sin(y / 50) * np.cos(x / 70)).astype(np.float32)
        rng = np.random.default_rng(12345)
        self._noise = np.round(rng.normal(0, 0.5, size=plane[0] * plane[1] + 4096),
                               2).astype(np.float32)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nplanes, *self.plane_shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 4

    def plane(self, t: int) -> np.ndarray:
        n = self.plane_shape[0] * self.plane_shape[1]
        start = (t * 7919) % 4096
        noise = self._noise[start:start + n].reshape(self.plane_shape)
        return np.round(self._base + noise + np.float32(0.01 * t), 2).astype(np.float32)

    def slab(self, t0: int, t1: int) -> np.ndarray:
        return np.stack([self.plane(t) for t in range(t0, t1)])

    def expected_sum(self) -> float:
        return float(sum(self.plane(t).sum(dtype=np.float64) for t in range(self.nplanes)))


@dataclass
class Written:
    """Where one variant lives in each format."""

    variant: Variant
    domain_url: str  # s3://BUCKET/home/admin/bench-SLUG.h5
    hsds_domain: str  # /home/admin/bench-SLUG.h5
    chunk_keys: list[str]
    stored_bytes: int
    zarr_prefix: str
    nc_key: str


def domain_path(slug: str) -> str:
    return f"home/admin/bench-{slug}.h5"


def write_h5dask(services: Services, data: Synthetic, variant: Variant) -> tuple[str, list[str]]:
    import h5dask

    url = f"s3://{BUCKET}/{domain_path(variant.slug)}"
    with h5dask.File(url, "w", storage_options=services.storage_options) as f:
        ds = f.create_dataset("v", shape=data.shape, dtype="<f4", chunks=variant.chunks,
                              compression="gzip" if variant.compressed else None,
                              compression_opts=4 if variant.compressed else None,
                              shuffle=variant.compressed)
        for t0 in range(0, data.nplanes, SLAB):
            t1 = min(t0 + SLAB, data.nplanes)
            ds[t0:t1] = data.slab(t0, t1)
        source = ds.source()
        keys = [source.chunk_key(i) for i in source.grid.indices()]
    return url, keys


def write_zarr(services: Services, data: Synthetic, variant: Variant) -> str:
    import zarr
    from zarr.codecs import BloscCodec
    from zarr.storage import ObjectStore

    prefix = f"zarr/bench-{variant.slug}.zarr"
    store = ObjectStore(services.obstore(prefix), read_only=False)
    root = zarr.open_group(store, mode="w", zarr_format=3)
    compressors = (BloscCodec(cname="zlib", clevel=4, shuffle="shuffle", typesize=4),) \
        if variant.compressed else None
    arr = root.create_array("v", shape=data.shape, chunks=variant.chunks, dtype="float32",
                            compressors=compressors, filters=None, fill_value=0.0,
                            dimension_names=("t", "y", "x"))
    for t0 in range(0, data.nplanes, SLAB):
        t1 = min(t0 + SLAB, data.nplanes)
        arr[t0:t1] = data.slab(t0, t1)
    zarr.consolidate_metadata(store)
    return prefix


def write_netcdf(services: Services, data: Synthetic, variant: Variant) -> str:
    import h5netcdf
    import obstore

    key = f"files/bench-{variant.slug}.nc"
    fd, path = tempfile.mkstemp(prefix="h5dask-bench-", suffix=".nc")
    os.close(fd)
    try:
        with h5netcdf.File(path, "w") as f:
            f.dimensions = {"t": data.nplanes, "y": data.plane_shape[0], "x": data.plane_shape[1]}
            kw: dict[str, Any] = {"chunks": variant.chunks}
            if variant.compressed:
                kw.update(compression="gzip", compression_opts=4, shuffle=True)
            v = f.create_variable("v", ("t", "y", "x"), "<f4", **kw)
            for t0 in range(0, data.nplanes, SLAB):
                t1 = min(t0 + SLAB, data.nplanes)
                v[t0:t1] = data.slab(t0, t1)
        obstore.put(services.obstore(), key, path)
    finally:
        os.unlink(path)
    return key


async def _sizes(store: Any, keys: list[str]) -> int:
    import obstore

    metas = await asyncio.gather(*(obstore.head_async(store, k) for k in keys))
    return sum(m["size"] for m in metas)


def write_variant(services: Services, data: Synthetic, variant: Variant,
                  formats: set[str]) -> Written:
    """Write ``variant`` in the formats named (h5dask always; 'zarr', 'netcdf')."""
    url, keys = write_h5dask(services, data, variant)
    stored = asyncio.run(_sizes(services.obstore(), keys))
    zarr_prefix = write_zarr(services, data, variant) if "zarr" in formats else ""
    nc_key = write_netcdf(services, data, variant) if "netcdf" in formats else ""
    return Written(variant, url, "/" + domain_path(variant.slug), keys, stored, zarr_prefix,
                   nc_key)


def nplanes_for(size_mib: int) -> int:
    """Planes of 4 MiB for about ``size_mib`` MiB (at least 2)."""
    plane_mib = PLANE[0] * PLANE[1] * 4 / MiB
    return max(2, round(size_mib / plane_mib))
