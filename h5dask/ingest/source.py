"""Opening a source file: h5py on a (counted) file object, plus a store for ranged reads.

A local path or file:// URL is opened directly; other URLs through fsspec (s3:// needs
s3fs). Chunks are then read by byte range through h5dask's own stores where the protocol
allows (local files, S3 via obstore), concurrently and outside h5py.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    LinkedReferenceRefused,
    SourceFileError,
    SourceFormatError,
    SourceNotFoundError,
    StorageError,
)
from ..storage import Location, local_path, open_object, refuse_dot_segments
from ..storage.base import ObjectStore
from ..storage.links import ENV_VAR, LinkPolicy
from ..storage.s3_options import TUNING_OPTIONS
from ..storage.sync import sync


class CountingFile(io.RawIOBase):
    """A read-only file object that counts the bytes h5py reads through it."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if hasattr(self._raw, "readinto"):
            n = self._raw.readinto(buffer)
        else:
            data = self._raw.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.bytes_read += n or 0
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


@dataclass
class Source:
    """The open source file: h5py on a (counted) file object, plus a store and key for
    ranged reads of its chunks where the protocol allows (local, file://, s3://)."""

    url: str
    h5: Any
    fileobj: CountingFile
    store: ObjectStore | None
    key: str | None
    file_uri: str | None  # as a linked layout names it
    range_bytes: int = 0
    ranges_ok: bool = True
    file_size: int | None = None  # recorded in linked layouts (a rewrite changes it)
    file_version: str | None = None  # likewise, as the store tells it (ObjectVersion.tag)
    modified_ns: int | None = None  # a local file's modification time (resumable loads)

    @property
    def bytes_read(self) -> int:
        return self.fileobj.bytes_read + self.range_bytes

    def close(self) -> None:
        try:
            self.h5.close()
        finally:
            self.fileobj.close()


def _s3fs_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """h5dask's s3fs-style storage_options as s3fs itself takes them."""
    from ..storage.s3_options import TUNING_OPTIONS

    out: dict[str, Any] = {}
    client = dict(options.get("client_kwargs") or {})
    config = dict(options.get("config_kwargs") or {})
    for k, v in options.items():
        if k in TUNING_OPTIONS or k in ("client_kwargs", "config_kwargs"):
            continue
        if k in ("region", "region_name"):
            client.setdefault("region_name", v)
        elif k == "addressing_style":
            config.setdefault("s3", {})["addressing_style"] = v
        elif k in ("ca_bundle", "verify"):
            client.setdefault("verify", v)
        else:
            out[k] = v
    if client:
        out["client_kwargs"] = client
    if config:
        out["config_kwargs"] = config
    return out


def register_filter_plugins() -> None:
    """Make HDF5 (through h5py) decode the filters ``hdf5plugin`` provides (lz4, zstd,
    bitshuffle, Blosc, Blosc2, bzip2, zfp, ...): importing it registers them. Without the
    package, such datasets fail with HDF5's own "can't open directory" error."""
    try:
        import hdf5plugin
    except ImportError:
        return
    _replace_netcdf4_plugins(hdf5plugin)


def _replace_netcdf4_plugins(hdf5plugin: Any) -> None:
    """netCDF4, imported before hdf5plugin, points HDF5_PLUGIN_PATH at its own filter
    plugins (built on its own copy of HDF5); hdf5plugin then leaves Blosc, Zstd and
    BZip2 to them, and h5py applies netCDF4's, which fail to write ("error during user
    callback"). Register hdf5plugin's own for those, whatever the import order; a
    plugin path the user set elsewhere is left alone."""
    netcdf4 = sys.modules.get("netCDF4")
    paths = [p for p in os.environ.get("HDF5_PLUGIN_PATH", "").split(os.pathsep) if p]
    if netcdf4 is None or not netcdf4.__file__ or not paths:
        return
    package = os.path.dirname(os.path.abspath(netcdf4.__file__))
    if not any(os.path.abspath(p).startswith(package + os.sep) for p in paths):
        return
    config = hdf5plugin.get_config()
    elsewhere = [name for name, origin in config.registered_filters.items()
                 if origin == "unknown" and name in config.build_config.embedded_filters]
    if elsewhere:
        hdf5plugin.register(tuple(elsewhere), force=True)


def open_source(src: Any, options: Mapping[str, Any] | None) -> Source:
    """Open ``src`` (a local path or an fsspec URL; ``options`` s3fs-style) read-only."""
    import h5py

    src = os.fspath(src)
    parts = urlsplit(src)
    refuse_dot_segments(src, parts)  # as for every URL (s3fs would walk up)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        path = local_path(src)
        try:
            raw: Any = open(path, "rb")  # closed by Source.close
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"source file {path!r} does not exist") from exc
        url = path
        file_uri: str | None = Path(path).as_uri()
        stat = os.fstat(raw.fileno())
        size: int | None = stat.st_size
        modified: int | None = stat.st_mtime_ns
    else:
        import fsspec

        opts = dict(options or {})
        if scheme in ("s3", "s3a"):
            opts = _s3fs_options(opts)
        try:
            fs, fspath = fsspec.core.url_to_fs(src, **opts)
            raw = fs.open(fspath, "rb", block_size=2**20, cache_type="blockcache")
        except ImportError as exc:
            raise ImportError(f"reading {src!r} needs the fsspec implementation of "
                              f"{scheme!r} ({exc}); for s3:// install s3fs") from exc
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"source file {src!r} does not exist (or its server "
                                      "cannot be reached)") from exc
        except PermissionError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot open the source file {src!r}: {exc}") from exc
        url = src
        file_uri = f"s3://{parts.netloc}{parts.path}" if scheme in ("s3", "s3a") else None
        size = getattr(raw, "size", None)
        modified = None
    fileobj = CountingFile(raw)
    try:  # the version of the bytes h5py is about to read: taken before it reads them
        ranged = open_source_store(src, options)
        version = _version(ranged, url, size, modified)
    except BaseException:
        fileobj.close()
        raise
    register_filter_plugins()
    try:
        h5 = h5py.File(fileobj, "r")
    except Exception as exc:
        problem = _not_hdf5(fileobj, url)
        fileobj.close()
        if problem is not None:
            raise problem from exc
        if isinstance(exc, OSError):
            raise SourceFileError(
                f"{url}: h5py cannot open it as an HDF5/netCDF-4 file ({exc})") from exc
        raise
    store, key = ranged if ranged is not None else (None, None)
    return Source(url, h5, fileobj, store, key, file_uri,
                  file_size=int(size) if size is not None else None,
                  file_version=version, modified_ns=modified)


#: a local file modified less than this before it is linked may be written again within
#: the same tick of the file system's clock, leaving its times as they were
RACY_NS = 2 * 10**9


def _version(ranged: tuple[ObjectStore, str] | None, url: str, size: int | None,
             modified_ns: int | None) -> str | None:
    """The source's version as its store tells it (what readers of a linked layout
    compare with), None where there is no store for ranged reads. A local file written
    just now is recorded as a version no store tells ("racy", as git calls it): readers
    then always check the layout against the file (once per process)."""
    if ranged is None:
        return None
    store, key = ranged
    found = sync(store.stat(key))
    if found is None or (size is not None and found.size != size):
        now = f"{found.size} bytes" if found is not None else "gone"
        raise SourceFileError(f"{url} changed while it was being opened (it was {size} "
                              f"bytes, now {now}): load it again once it is written")
    if found.tag and modified_ns is not None and time.time_ns() - modified_ns < RACY_NS:
        return f"{found.tag} racy"
    return found.tag


def _not_hdf5(fileobj: CountingFile, url: str) -> SourceFormatError | None:
    """Why h5py could not open ``fileobj``, if the reason is that it is not HDF5."""
    from ..format.signature import HEAD_SIZE, describe, sniff

    try:
        fileobj.seek(0)
        kind = sniff(fileobj.read(HEAD_SIZE))
    except OSError:
        return None
    if kind == "hdf5":
        return None
    hint = ("h5dask imports HDF5 and netCDF-4 files only: convert it with "
            "`nccopy -k nc4 IN OUT`, or open it with xarray and write it with "
            "h5dask.to_h5cloud(ds, URL)" if kind == "netcdf3" else
            "h5dask imports HDF5 and netCDF-4 files only")
    return SourceFormatError(f"cannot import {url!r}: it is {describe(kind)}; {hint}")


def open_source_store(uri: str, storage_options: Mapping[str, Any] | None = None
                      ) -> tuple[ObjectStore, str] | None:
    """A store and key for ranged reads of a source file (local path, file://, s3://);
    None for other protocols. ``storage_options`` are s3fs-style, as for domains (for a
    local file, only the tuning ones apply).

    >>> store, key = open_source_store("/data/run/x.h5")
    >>> (store.root_url, key)
    ('file:///data/run', 'x.h5')
    """
    scheme = urlsplit(uri).scheme.lower()
    options = dict(storage_options or {})
    if scheme in ("", "file"):
        options = {k: v for k, v in options.items() if k in TUNING_OPTIONS}
    elif scheme not in ("s3", "s3a"):
        return None
    return open_object(uri, options)


def check_linkable(file_uri: str, location: Location,
                   allowed_link_prefixes: Iterable[str] | None = None) -> None:
    """Refuse, before a load writes anything, to link a file that readers of the domain
    at ``location`` would refuse (LinkedReferenceRefused, saying what to do).

    >>> from h5dask.storage import open_location
    >>> location = open_location("file:///tmp/b/home/x.h5", {"bucket_root": "/tmp/b"})
    >>> check_linkable("file:///tmp/b/files/x.h5", location)  # inside the bucket root
    """
    policy = LinkPolicy.from_option(allowed_link_prefixes)
    try:
        policy.resolve(file_uri, location.store, "the domain")
    except LinkedReferenceRefused as exc:
        raise LinkedReferenceRefused(
            f"cannot link the file into {location.url}: {exc} Place the file inside the "
            "domain's store or copy it (without link=True / --link); if you allow it "
            f"(h5dask load: set {ENV_VAR}), every reader of the domain needs the same "
            "allowance.", "", file_uri) from exc


__all__ = ["CountingFile", "Source", "check_linkable", "open_source", "open_source_store"]
