"""Where reductions are pushed down, and whether a local fallback is allowed.

A bottom-layer module: the xarray backend and the CLI read the user's settings here
without importing the pushdown machinery (which imports dask and xarray internals).

Example::

    >>> resolve_active_config("http://127.0.0.1:8081", "require")
    ActiveConfig(url='http://127.0.0.1:8081', require=True)
    >>> resolve_active_config(None, None) is None  # without H5DASK_ACTIVE_STORAGE_URL
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import H5DaskError

#: the environment variable naming the server when ``active_storage_url=`` is not given
URL_ENV = "H5DASK_ACTIVE_STORAGE_URL"
#: the accepted values of ``active_storage=``
MODES = ("auto", "require", "off")


class ActiveStorageConfigError(H5DaskError, ValueError):
    """``active_storage=`` / ``active_storage_url=`` have a value h5dask cannot use."""


class ServerConfigError(ActiveStorageConfigError):
    """A setting of the active-storage server (:class:`~h5dask.active.server.ServerConfig`,
    ``h5dask serve-active``) is out of range; the message names the field and its option.

    Example::

        >>> str(ServerConfigError("max_queued", "must be at least 0", -1))
        'max_queued (--max-queued) must be at least 0, not -1'
    """

    def __init__(self, field: str, requirement: str, value: object) -> None:
        option = "--" + field.replace("_", "-")
        super().__init__(f"{field} ({option}) {requirement}, not {value!r}")
        self.field = field


@dataclass(frozen=True)
class ActiveConfig:
    """Where to push reductions down, and whether falling back locally is allowed."""

    url: str
    require: bool = False


def resolve_active_config(url: str | None, mode: str | bool | None) -> ActiveConfig | None:
    """The active-storage settings of one open, or None when pushdown is off.

    ``url`` is ``active_storage_url=`` (else ``$H5DASK_ACTIVE_STORAGE_URL``); ``mode`` is
    ``active_storage=``: ``"auto"``/True/None (push down, fall back locally with a
    warning), ``"require"`` (an error instead of a fallback) or ``"off"``/False.
    """
    if mode is True or mode is None:
        mode = "auto"
    if mode is False:
        mode = "off"
    if not isinstance(mode, str) or mode not in MODES:
        raise ActiveStorageConfigError(
            f"active_storage must be one of 'auto', 'require', 'off' (or True/False), "
            f"not {mode!r}")
    if mode == "off":
        return None
    url = url or os.environ.get(URL_ENV) or None
    if url is None:
        if mode == "require":
            raise ActiveStorageConfigError(
                f"active_storage='require' needs active_storage_url= or ${URL_ENV}")
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ActiveStorageConfigError(
            f"active_storage_url must be an http:// or https:// URL, not {url!r}")
    return ActiveConfig(url, require=mode == "require")


__all__ = ["ActiveConfig", "ActiveStorageConfigError", "MODES", "ServerConfigError",
           "URL_ENV", "resolve_active_config"]
