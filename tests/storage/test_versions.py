"""``ObjectStore.stat``: an object's size and a version tag that changes whenever it is
written, even to the same size (what a linked layout records of its file, see
:mod:`h5dask.linked_files`), on memory://, file:// and S3 (SeaweedFS)."""

from __future__ import annotations

import pytest
from storage_backends import BACKENDS, Backend, make_backend

import h5dask
from h5dask.storage.sync import sync


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    return make_backend(request, tmp_path)


def test_stat_tells_a_rewrite_of_the_same_size(backend: Backend) -> None:
    store = backend.store()
    sync(store.put("files/x.h5", b"a" * 100))
    h5dask.reset_stats()
    first = sync(store.stat("files/x.h5"))
    assert h5dask.stats()["metadata"]["read_requests"] == 1  # one HEAD
    assert first is not None and first.size == 100 and first.tag
    assert sync(store.stat("files/x.h5")) == first  # not written: the same version
    sync(store.put("files/x.h5", b"b" * 100))
    second = sync(store.stat("files/x.h5"))
    assert second is not None and second.size == 100 and second.tag != first.tag
    assert sync(store.size("files/x.h5")) == 100
    assert sync(store.stat("files/none.h5")) is None
