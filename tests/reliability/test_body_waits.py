"""S3 GET bodies over a slow link: ``timeout`` bounds each wait, never the transfer.

Through the fault proxy in front of SeaweedFS, a body arrives in 8 pieces 0.3 s apart
(``trickle``: 2.4 s in all) or stops halfway (``stall``), with ``timeout`` 1.5 s (each
wait has a wide margin on a busy machine; the whole transfer does not fit in one). Before, the
obstore client's timeout was a whole-request one: the steady transfer was cut (and
every retry cut again); now each wait (the answer, each 256 KiB of the body) has its own
``timeout``, so the slow transfer completes and the stalled one is cut, retried and
named as stalled.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest
from faultproxy import via_proxy

import h5dask
from h5dask.errors import StorageError
from h5dask.storage import open_object, sync
from h5dask.storage.s3 import WHOLE_GET_MAX

# longer than one request bounded whole: the body is streamed, each wait within timeout
BODY = np.random.default_rng(3).bytes(WHOLE_GET_MAX + WHOLE_GET_MAX // 2)


TIMEOUT = 1.5
TRICKLE = 2.4  # 8 pieces 0.3 s apart


def _store(seaweedfs: Any, proxy: Any, **tuning: Any) -> tuple[Any, str]:
    url = f"s3://h5dask-test/body-waits/{uuid.uuid4().hex}"
    writer, key = open_object(url, seaweedfs.storage_options())  # written at full speed
    sync(writer.put(key, BODY))
    options = via_proxy(seaweedfs.storage_options(), proxy, **{"timeout": TIMEOUT, **tuning})
    return open_object(url, options)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("byte_range", [None, (100, len(BODY) - 100)])
def test_a_slow_but_steady_s3_body_is_read_whole(seaweedfs, proxied, byte_range) -> None:
    store, key = _store(seaweedfs, proxied, max_attempts=1)
    proxied.delay = TRICKLE
    proxied.set_rates({"trickle": 1.0}, seed=0)
    proxied.methods = {"GET"}
    want = BODY if byte_range is None else BODY[byte_range[0]:byte_range[1]]
    assert bytes(sync(store.get(key, byte_range=byte_range))) == want
    assert bytes(store.get_buffer_sync(key, byte_range=byte_range)) == want  # blocking
    assert proxied.counts["trickle"] >= 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("blocking", [False, True])
def test_a_stalled_s3_body_is_cut_retried_and_named(seaweedfs, proxied, blocking) -> None:
    store, key = _store(seaweedfs, proxied, max_attempts=2, timeout=1.0)
    open_before = len(proxied._writers)
    proxied.set_rates({"stall": 1.0}, seed=0)
    proxied.methods = {"GET"}
    h5dask.reset_stats()
    with pytest.raises(StorageError, match=r"failed after 2 attempts: a body stalled "
                                           r"mid-transfer from .*the body stalled") as err:
        if blocking:
            store.get_buffer_sync(key)
        else:
            sync(store.get(key))
    assert err.value.key == key and err.value.attempts == 2
    assert h5dask.stats()["chunk"]["retries"] == 1
    assert proxied.counts["stall"] == 2
    # the error is held (its traceback has the frames that read the body), yet the
    # stalled connections are let go: before, they stayed open while it was kept
    assert _connections_close(proxied, to=open_before)
    proxied.set_rates({}, seed=0)  # the link recovers: the next read is whole
    assert bytes(sync(store.get(key))) == BODY


@pytest.mark.timeout(120)
def test_a_stalled_long_blocking_ranged_read_is_named_stalled(seaweedfs, proxied) -> None:
    """A blocking ranged GET over 1 MiB is one call on a client whose limit is scaled
    (0.5 s x 8 here): cut when it stalls, and named so, not as an endpoint that never
    answered."""
    store, key = _store(seaweedfs, proxied, max_attempts=1, timeout=0.5)
    proxied.set_rates({"stall": 1.0}, seed=0)
    proxied.methods = {"GET"}
    with pytest.raises(StorageError, match=r"a body stalled mid-transfer from .*not all of "
                                           r"its 1048577 bytes in 4 s"):
        store.get_buffer_sync(key, byte_range=(0, WHOLE_GET_MAX + 1))
    assert proxied.counts["stall"] == 1


def _connections_close(proxy: Any, to: int) -> bool:
    """Whether the proxy's open client connections drop to ``to`` (polled: the client
    closes them from its own threads)."""
    for _ in range(50):
        if len(proxy._writers) <= to:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(120)
def test_a_slow_but_steady_read_of_a_version_is_read_whole(seaweedfs, proxied) -> None:
    """A read of a given version (If-Match: linked chunks) over 1 MiB has the same
    waits as a plain one; before, it was one request bounded whole by ``timeout``."""
    store, key = _store(seaweedfs, proxied, max_attempts=1)
    version = sync(store.stat(key))
    proxied.delay = TRICKLE
    proxied.set_rates({"trickle": 1.0}, seed=0)
    proxied.methods = {"GET"}
    byte_range = (100, len(BODY) - 100)
    want = BODY[100:-100]
    assert bytes(sync(store.get_buffer(key, byte_range=byte_range, version=version))) == want
    assert bytes(store.get_buffer_sync(key, byte_range=byte_range, version=version)) == want
    assert proxied.counts["trickle"] == 2


# -- other fsspec file systems (s3fs here, as gcsfs or adlfs would be) -------------------
def _s3fs_store(seaweedfs: Any, proxy: Any, body: bytes, **tuning: Any) -> tuple[Any, str]:
    """An fsspec store (s3fs, through the proxy) of the object ``body``, written first."""
    from h5dask.storage import StoreTuning
    from h5dask.storage.base import freeze
    from h5dask.storage.fsspec_store import FsspecObjectStore

    url = f"s3://h5dask-test/body-waits/{uuid.uuid4().hex}"
    writer, key = open_object(url, seaweedfs.storage_options())
    sync(writer.put(key, body))
    options = {k: v for k, v in seaweedfs.storage_options().items() if k != "client_kwargs"}
    options["client_kwargs"] = {"endpoint_url": proxy.endpoint}
    options["skip_instance_cache"] = True
    store = FsspecObjectStore("s3", "h5dask-test/body-waits", freeze(options),
                              StoreTuning().with_options({"timeout": TIMEOUT,
                                                          "retry_base_delay": 0, **tuning}))
    return store, key.rsplit("/", 1)[1]


@pytest.mark.timeout(120)
def test_a_slow_but_steady_fsspec_body_is_read_whole(seaweedfs, proxied) -> None:
    """Before, a ranged GET through a non-http fsspec file system had ``timeout`` for
    the whole call: 1.5 MiB over 2.4 s was cut at 1.5 s; now it may take
    timeout x (1 + length / 256 KiB)."""
    store, key = _s3fs_store(seaweedfs, proxied, BODY, max_attempts=1)
    proxied.delay = TRICKLE
    proxied.set_rates({"trickle": 1.0}, seed=0)
    proxied.methods = {"GET"}
    assert bytes(sync(store.get(key, byte_range=(0, len(BODY))))) == BODY
    assert proxied.counts["trickle"] == 1


@pytest.mark.timeout(120)
def test_a_slow_but_steady_bounded_fsspec_read_is_read_whole(seaweedfs, proxied) -> None:
    """A chunk read there is a whole-object GET of a known size bound (``get_bounded``):
    it may take timeout x (1 + bound / 256 KiB) as a ranged GET does; before, it had
    ``timeout`` for the whole transfer and was cut."""
    store, key = _s3fs_store(seaweedfs, proxied, BODY, max_attempts=1)
    proxied.delay = TRICKLE
    proxied.set_rates({"trickle": 1.0}, seed=0)
    proxied.methods = {"GET"}
    assert bytes(sync(store.get_bounded(key, len(BODY) + 100))) == BODY
    assert bytes(store.get_bounded_sync(key, len(BODY) + 100)) == BODY
    assert proxied.counts["trickle"] == 2


@pytest.mark.timeout(120)
def test_a_stalled_fsspec_body_is_cut_and_retried(seaweedfs, proxied) -> None:
    small = BODY[:100_000]  # cut after 0.5 x (1 + 100000 / 256 KiB) = 0.69 s
    store, key = _s3fs_store(seaweedfs, proxied, small, max_attempts=2, timeout=0.5)
    proxied.set_rates({"stall": 1.0}, seed=0)
    proxied.methods = {"GET"}
    with pytest.raises(StorageError, match=r"failed after 2 attempts: no answer .*no "
                                           r"complete answer in 0\.691 s"):
        sync(store.get(key, byte_range=(0, len(small))))
    assert proxied.counts["stall"] == 2
