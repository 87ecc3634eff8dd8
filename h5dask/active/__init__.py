"""Active storage: h5dask's own Reductionist v2 server (reductions next to the object store).

Modules: :mod:`~h5dask.active.request` (request model and validation),
:mod:`~h5dask.active.codecs` (decompression and filters),
:mod:`~h5dask.active.operations` (count/min/max/sum/select with missing data),
:mod:`~h5dask.active.upstream` (allow-listed object fetching),
:mod:`~h5dask.active.server` (the aiohttp app, ``serve`` and the command line).

Example::

    from h5dask.active.server import serve
    serve("127.0.0.1", 8081, ["http://127.0.0.1:9000"])
"""
