"""One full read of the variable per call, by each contender; each returns the sum.

Every xarray contender runs ``xr.open_...(...)["v"].sum().compute()`` on dask's default
(threaded) scheduler, opening afresh each time, so open cost is included everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from .data import Written
from .services import BUCKET, Services

Runner = Callable[[], Any]


def raw(services: Services, written: Written, limit: int | None) -> Runner:
    """obstore ``get_async`` of every chunk object: all at once, or ``limit`` in flight.
    Returns the bytes received (there is nothing to sum: the ceiling moves bytes only)."""
    import obstore

    store = services.obstore()
    keys = list(written.chunk_keys)

    async def fetch_all() -> int:
        sem = asyncio.Semaphore(limit) if limit else None

        async def one(key: str) -> int:
            if sem is None:
                result = await obstore.get_async(store, key)
                return len(await result.bytes_async())
            async with sem:
                result = await obstore.get_async(store, key)
                return len(await result.bytes_async())

        return sum(await asyncio.gather(*(one(k) for k in keys)))

    def run() -> int:
        got = asyncio.run(fetch_all())
        if got != written.stored_bytes:
            raise RuntimeError(f"raw read {got} bytes, expected {written.stored_bytes}")
        return got

    return run


def raw_sum(services: Services, written: Written, threads: int = 2, dtype: str = "<f4"
            ) -> Runner:
    """Every chunk object's GET at once (as :func:`raw`), each chunk summed as it
    arrives (xarray's NaN-skipping sum, what dask runs per block) in ``threads`` threads:
    the ceiling of a reader that must both move the bytes and compute the sum. Plain
    (uncompressed) chunks of ``dtype`` only."""
    import concurrent.futures

    import obstore
    import xarray as xr

    store = services.obstore()
    keys = list(written.chunk_keys)
    if written.variant.compressed:
        raise ValueError("raw_sum reads plain (uncompressed) chunks only")

    def block_sum(data: Any) -> float:
        return float(xr.DataArray(np.frombuffer(data, dtype)).sum())

    async def fetch_all(pool: concurrent.futures.Executor) -> float:
        loop = asyncio.get_running_loop()

        async def one(key: str) -> float:
            result = await obstore.get_async(store, key)
            return await loop.run_in_executor(pool, block_sum, await result.bytes_async())

        return sum(await asyncio.gather(*(one(k) for k in keys)))

    def run() -> float:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return asyncio.run(fetch_all(pool))

    return run


def h5dask_read(services: Services, written: Written) -> Runner:
    import xarray as xr

    def run() -> float:
        ds = xr.open_dataset(written.domain_url, engine="h5cloud", chunks={},
                             storage_options=services.storage_options)
        return float(ds["v"].sum().compute())

    return run


def pushdown_read(services: Services, written: Written) -> Runner:
    import dask
    import xarray as xr

    url = services.start_active().url

    def run() -> float:
        # the push-down optimisation is installed process-wide when a dataset is opened
        # with active storage; the context keeps it from reaching the other contenders
        with dask.config.set(array_optimize=None):
            ds = xr.open_dataset(written.domain_url, engine="h5cloud", chunks={},
                                 storage_options=services.storage_options,
                                 active_storage_url=url, active_storage="require")
            return float(ds["v"].sum().compute())

    return run


def zarr_fsspec(services: Services, written: Written) -> Runner:
    import xarray as xr

    url = f"s3://{BUCKET}/{written.zarr_prefix}"

    def run() -> float:
        ds = xr.open_zarr(url, storage_options=services.storage_options, consolidated=True,
                          chunks={}, zarr_format=3)
        return float(ds["v"].sum().compute())

    return run


def zarr_obstore(services: Services, written: Written) -> Runner:
    import xarray as xr
    from zarr.storage import ObjectStore

    def run() -> float:
        store = ObjectStore(services.obstore(written.zarr_prefix), read_only=True)
        ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
        return float(ds["v"].sum().compute())

    return run


def h5netcdf_read(services: Services, written: Written) -> Runner:
    import s3fs
    import xarray as xr

    fs = s3fs.S3FileSystem(**services.storage_options)
    path = f"{BUCKET}/{written.nc_key}"

    def run() -> float:
        with fs.open(path, "rb") as f:
            ds = xr.open_dataset(f, engine="h5netcdf", chunks={})
            return float(ds["v"].sum().compute())

    return run


def hsds_read(services: Services, written: Written) -> Runner:
    import h5pyd

    server = services.start_hsds()

    def run() -> float:
        with h5pyd.File(written.hsds_domain, "r", **server.h5pyd_kwargs()) as f:
            data = f["v"][...]
        return float(np.sum(data, dtype=np.float32))

    return run


def in_memory(data: Any, chunks: tuple[int, ...]) -> Runner:
    """No storage at all: the same xarray ``sum()`` over dask blocks of the same chunks
    that are views of a numpy array already in memory (built with ``map_blocks``, so the
    graph holds no copy of the data and no hash of it). What the computation alone costs
    on this machine: the ceiling of every xarray reader."""
    import dask.array as da
    import xarray as xr

    arr = data.slab(0, data.nplanes)
    blocks = da.core.normalize_chunks(chunks, arr.shape)

    def block(block_info: Any = None) -> np.ndarray:
        where = block_info[None]["array-location"]
        return arr[tuple(slice(a, b) for a, b in where)]

    def run() -> float:
        lazy = da.map_blocks(block, chunks=blocks, dtype=arr.dtype,
                             meta=np.empty((0,) * arr.ndim, arr.dtype))
        return float(xr.DataArray(lazy).sum().compute())

    return run
