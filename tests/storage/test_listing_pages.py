"""Listing a large S3 prefix page by page: memory bounded by a page, not the prefix.

Before, every S3 listing gathered all entries (obstore's dicts for every object) before
the caller saw the first key, and ``h5dask rm`` held every object key of a domain and a
DELETE coroutine for each at once. ``iter_list`` asks one page (S3 ``start-after`` the
previous page) at a time, each retried on its own; rm deletes page by page.
"""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Callable, Coroutine

import numpy as np

import h5dask
from h5dask.format import ids
from h5dask.storage import open_location, sync

N_CHUNKS = 1500  # over a thousand objects: several pages, quick to write


def _peak(walk: Callable[[], Coroutine]) -> int:
    """The most memory Python held while ``walk`` ran (the I/O loop's thread too)."""
    tracemalloc.start()
    try:
        sync(walk())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_s3_prefix_is_listed_and_removed_page_by_page(storage_options,
                                                              s3_bucket_url) -> None:
    url = f"{s3_bucket_url}/big-{uuid.uuid4().hex[:6]}.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("v", data=np.arange(N_CHUNKS, dtype="i1"), chunks=(1,))
        root = f.id
    store = open_location(url, storage_options).store
    prefix = ids.object_prefix(root) + "/"
    keys = sync(store.list(prefix))
    assert len(keys) > N_CHUNKS

    async def pages() -> tuple[list[list[str]], int]:
        found, first_page_requests = [], 0
        async for page in store.iter_list(prefix, page_size=250):
            if not found:
                first_page_requests = h5dask.stats()["other"]["list_requests"]
            found.append(page)
        return found, first_page_requests

    h5dask.reset_stats()
    got, first = sync(pages())
    assert [k for page in got for k in page] == keys
    assert all(len(page) <= 250 for page in got) and len(got) >= N_CHUNKS // 250
    assert first == 1  # the first page came before the rest was listed

    async def whole() -> None:
        assert len(await store.list(prefix)) == len(keys)

    async def paged() -> None:
        n = 0
        async for page in store.iter_list(prefix, page_size=250):
            n += len(page)
        assert n == len(keys)

    whole_peak, paged_peak = _peak(whole), _peak(paged)
    assert paged_peak * 3 < whole_peak, (paged_peak, whole_peak)

    h5dask.reset_stats()
    removal = h5dask.rm(url, storage_options=storage_options)
    assert removal.objects >= len(keys) + 1  # (and the objects beside .domain.json)
    # listed in pages (one LIST request per 1000 keys, and the empty end), not whole
    assert h5dask.stats()["other"]["list_requests"] >= len(keys) // 1000 + 2
    assert sync(store.list(prefix)) == []
