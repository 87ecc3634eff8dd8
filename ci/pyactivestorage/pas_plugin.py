"""pytest plugin pointing PyActiveStorage's test configuration at our servers.

Loaded by ``run.py`` (``-p pas_plugin``) before PyActiveStorage's test modules are imported;
reads the endpoints from ``H5DASK_PA_ENDPOINTS`` (JSON: ``s3``, ``active``). What it
changes, and why:

* ``activestorage.config`` (and the names ``activestorage.active`` imported from it):
  ``USE_S3 = True`` as their S3 workflow appends it, the S3 URL, keys and Reductionist
  URL of our servers;
* ``config_minio`` (tests/s3_exploratory's own config) the same way;
* ``Active``'s storage-type guess: JASMIN's object store answers HEAD with a
  ``gateway-protocol: s3`` header that SeaweedFS does not send, so URLs under our S3
  endpoint are taken for S3 as there;
* with ``H5DASK_PA_FORCE_V2=1``, version-1 (client-side) S3 reads go through the server;
* netCDF4 >= 1.7.5 refuses the float indices (``n / 2``) their dummy data writes with;
  they are truncated as older netCDF4 did.
"""

from __future__ import annotations

import json
import os

import activestorage.active as active
import activestorage.config as config
import netCDF4

_endpoints = json.loads(os.environ["H5DASK_PA_ENDPOINTS"])
_settings = {
    "USE_S3": True,
    "S3_URL": _endpoints["s3"],
    "S3_ACTIVE_STORAGE_URL": _endpoints["active"],
    "S3_ACCESS_KEY": _endpoints["key"],
    "S3_SECRET_KEY": _endpoints["secret"],
    "S3_BUCKET": "pyactivestorage",
}
for _module in (config, active):
    for _name, _value in _settings.items():
        setattr(_module, _name, _value)
try:
    import config_minio
except ImportError:
    pass
else:
    for _name, _value in _settings.items():
        setattr(config_minio, _name, _value)

_guess_interface_type = active.return_interface_type


def _interface_type(uri: str) -> str | None:
    if str(uri).startswith(_endpoints["s3"]):
        return "s3"
    return _guess_interface_type(uri)


active.return_interface_type = _interface_type

if os.environ.get("H5DASK_PA_FORCE_V2") == "1":
    _getitem = active.Active.__getitem__

    def _getitem_v2(self, index):  # type: ignore[no-untyped-def]
        if self._version == 1 and self.interface_type == "s3":
            self._version = 2
        return _getitem(self, index)

    active.Active.__getitem__ = _getitem_v2

_setitem = netCDF4.Variable.__setitem__


def _setitem_int(self, elem, data):  # type: ignore[no-untyped-def]
    return _setitem(self, int(elem) if isinstance(elem, float) else elem, data)


netCDF4.Variable.__setitem__ = _setitem_int
