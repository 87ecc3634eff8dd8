"""A library user's whole program: read one object from S3 through h5dask's I/O loop,
print its size, end. Run by ``test_library_exit.py`` many times; it must exit 0.

Imports only what the read needs (a run costs ~0.2 s of CPU). Usage::

    python library_exit_reader.py s3://bucket/key '{"key": ..., "secret": ...,
        "client_kwargs": {"endpoint_url": ...}}' [--without-exit-handler]

``--without-exit-handler`` unregisters h5dask's ``atexit`` shutdown of the I/O loop, to
show that the test catches the abort that shutdown prevents.
"""

import atexit
import importlib
import json
import sys

from h5dask.storage import open_object

# the module: the name h5dask.storage.sync is also its function sync()
sync_module = importlib.import_module("h5dask.storage.sync")

url, options = sys.argv[1], json.loads(sys.argv[2])
store, key = open_object(url, options)
data = sync_module.sync(store.get(key, kind="meta"))
if "--without-exit-handler" in sys.argv[3:]:
    atexit.unregister(sync_module._shut_down)
print(f"read {len(data)} bytes")
