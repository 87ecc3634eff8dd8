"""A library user's program that ends while GETs are still in flight: one read, then 20
GETs started on h5dask's I/O loop and never awaited, then the end of the program after a
random pause (0-0.3 s, as long as the server takes to answer). Run by
``test_library_exit.py`` many times; it must exit 0.

Usage::

    python library_exit_in_flight.py http://ENDPOINT
"""

import asyncio
import random
import sys
import time

from h5dask.storage import open_object
from h5dask.storage.sync import io_loop, sync

options = {"key": "k", "secret": "s", "endpoint_url": sys.argv[1], "max_attempts": 1}
store, key = open_object("s3://bucket/db/first", options)
sync(store.get(key))
for i in range(20):
    asyncio.run_coroutine_threadsafe(store.get(f"db/k{i}"), io_loop())
time.sleep(random.uniform(0, 0.3))
print("read, and left 20 GETs in flight")
