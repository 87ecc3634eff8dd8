"""The ``h5cloud`` entry point xarray discovers: a thin class that imports the reader
(:mod:`h5dask.xarray.backend`, with the storage and codec stack) only when it is used.

xarray imports every installed backend's entry point module whenever it lists its
engines, i.e. on every ``open_dataset`` call with any engine; this module therefore
imports nothing beyond xarray itself.

>>> import xarray as xr
>>> "h5cloud" in xr.backends.list_engines()
True
"""

from __future__ import annotations

from typing import Any

from xarray.backends.common import BackendEntrypoint

DOCS_URL = "https://github.com/h5dask/h5dask#readme"


def _reader() -> BackendEntrypoint:
    from .backend import H5CloudBackendEntrypoint

    return H5CloudBackendEntrypoint()


class LazyH5CloudEntrypoint(BackendEntrypoint):
    """``engine="h5cloud"``: HSDS schema-v2 domains in object storage, read directly.

    ``xr.open_dataset(url, engine="h5cloud", chunks={}, ...)`` takes xarray's decoding
    keywords and these of its own:

    - ``storage_options``: the store's settings and credentials (s3fs conventions;
      README, "Configuration"); without them, the AWS environment's.
    - ``group``: the path of a group inside the domain, e.g. ``"/obs"``.
    - ``active_storage_url``, ``active_storage``: push reductions down to a
      Reductionist-compatible server (``"require"``: fail instead of reducing locally;
      ``False``: never).
    - ``allowed_link_prefixes``: where linked datasets may read outside the domain's store.
    - ``verify_unversioned_links``: check linked layouts that recorded no version of their
      file against it before reading (see :class:`h5dask.File`).
    - ``max_coordinate_bytes``, ``phony_dims``: see
      :meth:`h5dask.xarray.backend.H5CloudBackendEntrypoint.open_dataset`.

    ``chunks={}`` gives one dask task per chunk object; without ``chunks`` the
    variables are lazily indexed numpy arrays. Every method hands over to
    :class:`h5dask.xarray.backend.H5CloudBackendEntrypoint` (a subclass that implements
    them).

    >>> import numpy as np, xarray as xr, h5dask
    >>> h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.arange(4.0))}), "memory://ep/home/a.h5")
    >>> xr.open_dataset("memory://ep/home/a.h5", engine="h5cloud", chunks={}).v.chunks
    ((4,),)
    """

    description = "Open HSDS schema-v2 domains in object storage with h5dask (no server)"
    url = DOCS_URL
    open_dataset_parameters = (
        "filename_or_obj", "drop_variables", "mask_and_scale", "decode_times",
        "concat_characters", "decode_coords", "use_cftime", "decode_timedelta", "group",
        "storage_options", "active_storage_url", "active_storage", "allowed_link_prefixes",
        "max_coordinate_bytes", "verify_unversioned_links",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return _reader().guess_can_open(filename_or_obj)

    def open_dataset(self, filename_or_obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _reader().open_dataset(filename_or_obj, **kwargs)

    def open_groups_as_dict(self, filename_or_obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _reader().open_groups_as_dict(filename_or_obj, **kwargs)

    def open_datatree(self, filename_or_obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _reader().open_datatree(filename_or_obj, **kwargs)
