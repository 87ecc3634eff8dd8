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

    Every method hands over to :class:`h5dask.xarray.backend.H5CloudBackendEntrypoint`
    (a subclass that implements them).
    """

    description = "Open HSDS schema-v2 domains in object storage with h5dask (no server)"
    url = DOCS_URL
    open_dataset_parameters = (
        "filename_or_obj", "drop_variables", "mask_and_scale", "decode_times",
        "concat_characters", "decode_coords", "use_cftime", "decode_timedelta", "group",
        "storage_options", "active_storage_url", "active_storage", "allowed_link_prefixes",
        "max_coordinate_bytes",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return _reader().guess_can_open(filename_or_obj)

    def open_dataset(self, filename_or_obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _reader().open_dataset(filename_or_obj, **kwargs)

    def open_groups_as_dict(self, filename_or_obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _reader().open_groups_as_dict(filename_or_obj, **kwargs)

    def open_datatree(self, filename_or_obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _reader().open_datatree(filename_or_obj, **kwargs)
