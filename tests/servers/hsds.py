"""The HSDS launcher lives in the package (benchmarks use it too, and must not import
tests): :mod:`h5dask.services.hsds`."""

from h5dask.services.hsds import HSDSServer

__all__ = ["HSDSServer"]
