"""Object storage: one async interface, several back ends, and URL resolution.

A domain URL names a bucket root and a domain path inside it:

- ``s3://bucket/home/user/run1.h5``: bucket ``bucket``, domain ``home/user/run1.h5``
- ``file:///ROOT/BUCKET/home/user/run1.h5`` (or a plain path): the bucket root is
  ``storage_options={"bucket_root": ...}`` if given, else found by the rule in
  :mod:`h5dask.storage.bucket_root` (an existing domain's bucket; the HSDS bucket around
  the domain's folders; else the directory holding the domain, never an unrelated
  ancestor).
- ``memory://...`` and other fsspec protocols: as for ``file://`` (bucket-style
  protocols such as ``gs://`` use the first path segment as the bucket).
- ``http(s)://`` cannot hold a domain (no listing, no writes): refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import DomainURLError, InvalidKeyError, UnsupportedURLError
from .base import ObjectStore, TransientError, cached_store, freeze
from .bucket_root import FileSystemProbe, ambiguity_message, find_bucket_root
from .keys import check_key
from .local import LocalObjectStore
from .s3_options import S3Settings, resolve_s3_settings
from .settings import RetryPolicy, StoreTuning, resolve_storage_options
from .sync import sync

__all__ = [
    "Location", "ObjectStore", "RetryPolicy", "S3Settings", "StoreTuning", "TransientError",
    "local_path", "names_bucket_root", "open_location", "open_object", "open_prefix",
    "refuse_dot_segments", "refuse_empty_segments",
    "resolve_s3_settings", "resolve_storage_options", "sync",
]

_BUCKET_PROTOCOLS = {"gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}
_UNSUPPORTED = {"http", "https", "ftp", "sftp", "ssh"}
SUPPORTED_SCHEMES = "s3://, file:// (or a plain path), memory://, gs://, az:// and other " \
    "fsspec file systems"


@dataclass(frozen=True)
class Location:
    """Where a domain lives: a store (its bucket root) and the domain's path in it."""

    store: ObjectStore
    domain: str  # e.g. "home/user/run1.h5", no leading slash
    #: why a NEW domain may not be created here without an explicit bucket_root
    #: (see :mod:`h5dask.storage.bucket_root`); reading is unaffected
    ambiguity: str | None = None

    @property
    def url(self) -> str:
        """The domain's URL, as it opens the same domain again."""
        return self.store.url_of(self.domain)

    @property
    def domain_key(self) -> str:
        return f"{self.domain}/.domain.json"


def _s3_store(bucket: str, storage_options: Mapping[str, Any] | None) -> ObjectStore:
    from .s3 import S3ObjectStore

    tuning, options = resolve_storage_options(storage_options, "s3")
    return cached_store(S3ObjectStore, (bucket, resolve_s3_settings(options), tuning))


def _local_store(root: str, storage_options: Mapping[str, Any] | None) -> ObjectStore:
    tuning, _ = resolve_storage_options(storage_options, "file")
    return cached_store(LocalObjectStore, (root, tuning))


def _fsspec_store(protocol: str, root: str, options: dict[str, Any], tuning: StoreTuning
                  ) -> ObjectStore:
    from .fsspec_store import FsspecObjectStore

    return cached_store(FsspecObjectStore, (protocol, root, freeze(options), tuning))


def _clean_domain(path: str, url: str) -> str:
    domain = path.strip("/")
    if not domain:
        raise DomainURLError(
            f"{url!r} names no domain path (expected e.g. s3://bucket/home/run1.h5)")
    try:
        check_key(domain)
    except Exception as exc:
        raise DomainURLError(f"invalid domain path in {url!r}: {exc}") from exc
    return domain


def _local_probe() -> FileSystemProbe:
    def read(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(1 << 20)
        except OSError:
            return None

    def names(path: str) -> Iterable[str]:
        with os.scandir(path) as it:
            yield from (entry.name for entry in it)

    return FileSystemProbe(os.path.isdir, os.path.isfile, read, names)


def _fsspec_probe(fs: Any, protocol: str, options: dict[str, Any], tuning: StoreTuning
                  ) -> FileSystemProbe:
    def read(path: str) -> bytes | None:
        # through a store (of the path's top directory), as every other read: retried,
        # within the deadline, counted; a read that fails for good is raised, never
        # taken for a missing .domain.json (that could pick another bucket root)
        top, _, key = path.lstrip("/").partition("/")
        if not top or not key:
            return None
        store = _fsspec_store(protocol, "/" + top, options, tuning)
        try:
            data = store.get_buffer_sync(key, kind="other", byte_range=(0, 1 << 20))
        except InvalidKeyError:
            return None
        return None if data is None else bytes(data)

    def names(path: str) -> list[str]:
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]

    return FileSystemProbe(fs.isdir, fs.isfile, read, names)


def _protocol(scheme: str) -> str:
    """The store kind of a URL scheme: ``local://`` is fsspec's other name for
    ``file://`` and gets the local store, which keeps reads inside the bucket root
    (fsspec's local file system follows symlinks anywhere)."""
    scheme = scheme.lower()
    return "file" if scheme in ("", "local") else scheme


def _unsupported_url_message(url: str, scheme: str) -> str:
    """Why ``url`` cannot name a domain, and, for an HSDS server's URL, where to find the
    same domain in the server's storage."""
    parts = urlsplit(url)
    path = (f"/{parts.netloc}" if scheme == "hdf5" else "") + parts.path
    hsds = (f"; for a domain an HSDS server keeps, open it from the server's storage: "
            f"s3://BUCKET{path} (the server's BUCKET_NAME) or file:///ROOT/BUCKET{path} "
            "(its POSIX ROOT_DIR)")
    if scheme == "hdf5":
        return f"{url!r} is an HSDS server path (h5pyd), not a storage URL{hsds}"
    return (f"{url!r}: a domain cannot live at a {scheme}:// URL (no object listing or "
            f"writes there); h5dask reads domains from {SUPPORTED_SCHEMES}"
            f"{hsds if scheme in ('http', 'https') else ''}")


def local_path(url: str, parts: SplitResult | None = None) -> str:
    """The absolute path a ``file://`` URL (percent-encoded, RFC 8089, as
    ``Path.as_uri()`` writes it and h5dask reports it) or a plain path names (``~``
    expanded in a plain path, as xarray does); a ``file://`` URL with a host is refused:
    its first path segment is a host, so ``file://data/x.h5`` would name ``/x.h5``.

    >>> local_path("file:///data/run%201/x.h5")
    '/data/run 1/x.h5'
    """
    parts = urlsplit(url) if parts is None else parts
    if not parts.scheme:
        return os.path.abspath(os.path.expanduser(url))
    if parts.netloc not in ("", "localhost"):
        raise DomainURLError(
            f"{url!r} names host {parts.netloc!r}: a file:// URL needs an absolute path "
            f"(file:///{parts.netloc}{parts.path} for /{parts.netloc}{parts.path}); for a "
            "relative path give a plain path, without file://")
    return os.path.abspath(unquote(parts.path))


def _check_fsspec_protocol(protocol: str, url: str) -> None:
    """Refuse a scheme fsspec does not know, or whose package is not installed."""
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise UnsupportedURLError(
            f"{url!r}: the {protocol}:// file system needs a package that is not "
            f"installed ({exc})") from exc
    except ValueError as exc:
        raise UnsupportedURLError(
            f"{url!r}: unknown URL scheme '{protocol}://'; h5dask reads domains from "
            f"{SUPPORTED_SCHEMES}") from exc


def refuse_dot_segments(url: str, parts: SplitResult | None = None) -> None:
    """Raise :class:`DomainURLError` for a URL with a '.' or '..' segment, also
    percent-encoded (file:// and fsspec paths are decoded, so ``%2E%2E`` would walk up):
    a URL names an object path, not a file-system walk, and '..' could leave the bucket
    root. The one owner of this check for URLs a user gives (domains, folders, the files
    of a load); :class:`InvalidKeyError` is for object keys. Plain local paths, without a
    scheme, are resolved as the OS does.

    >>> refuse_dot_segments("s3://bucket/home/%2e%2e/x.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    h5dask.errors.DomainURLError: invalid path in 's3://bucket/home/%2e%2e/x.h5': '.' and ...
    """
    parts = urlsplit(url) if parts is None else parts
    if not parts.scheme:
        return
    segments = unquote(f"{parts.netloc}/{parts.path}").split("/")
    if any(seg in (".", "..") for seg in segments):
        raise DomainURLError(
            f"invalid path in {url!r}: '.' and '..' segments are refused (also "
            "percent-encoded); give the path without them")


def refuse_empty_segments(url: str, parts: SplitResult | None = None) -> None:
    """Raise :class:`DomainURLError` for a domain or folder URL with an empty path
    segment (``a//x.h5``, also percent-encoded): file systems and fsspec collapse it, so
    ``memory://b/a//x.h5`` and ``memory://b/a/x.h5`` would be two URLs of one domain (and
    S3 keeps them apart). One trailing '/' (a folder) is not a segment. Plain local
    paths, without a scheme, are resolved as the OS does.

    >>> refuse_empty_segments("memory://bucket/home//x.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    h5dask.errors.DomainURLError: invalid path in 'memory://bucket/home//x.h5': empty ...
    """
    parts = urlsplit(url) if parts is None else parts
    if not parts.scheme:
        return
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    path = path[:-1] if path.endswith("/") else path
    if path and "" in path.split("/"):
        raise DomainURLError(
            f"invalid path in {url!r}: empty path segments ('//') are refused, as they "
            "would name the same domain as the path without them on file systems; give "
            "the path with single slashes")


def open_location(url: str, storage_options: Mapping[str, Any] | None = None) -> Location:
    """Resolve a domain URL to a :class:`Location`.

    >>> loc = open_location("memory://bucket/home/run1.h5")
    >>> loc.domain
    'run1.h5'
    """
    if not url.isprintable():
        # urlsplit drops tabs and newlines: the URL would name another domain
        raise DomainURLError(f"invalid domain URL {url!r}: control characters are not allowed")
    parts = urlsplit(url)
    protocol = _protocol(parts.scheme)
    if protocol in _UNSUPPORTED or protocol == "hdf5":
        raise UnsupportedURLError(_unsupported_url_message(url, parts.scheme.lower()))
    if parts.scheme and ("?" in url or "#" in url):
        # what follows '?' or '#' is a query or fragment to urlsplit, so the URL would
        # silently name another domain (s3://b/home/a?b.h5 -> home/a): refuse it
        raise DomainURLError(f"invalid domain URL {url!r}: '?' and '#' cannot be part of a "
                         "domain path in a URL (give a plain local path to use them in "
                         "file names)")
    refuse_dot_segments(url, parts)
    refuse_empty_segments(url, parts)
    if protocol in ("s3", "s3a"):
        bucket = parts.netloc
        if not bucket:
            raise DomainURLError(f"{url!r} has no bucket name (expected s3://BUCKET/path)")
        domain = _clean_domain(parts.path, url)
        return Location(_s3_store(bucket, storage_options), domain)

    ambiguity = None
    if protocol == "file":
        bucket_root = resolve_storage_options(storage_options, "file")[1].get("bucket_root")
        path = local_path(url, parts)
        if bucket_root:
            root = os.path.abspath(bucket_root)
        else:
            found = find_bucket_root(_local_probe(), path)
            root = found.path
            if found.ambiguous_with:
                ambiguity = ambiguity_message(url, root, found.ambiguous_with)
        rel = os.path.relpath(path, root)
        if rel.startswith(".."):
            raise DomainURLError(f"domain {path!r} is not inside bucket_root {root!r}")
        return Location(_local_store(root, storage_options), _clean_domain(rel, url), ambiguity)

    import fsspec

    _check_fsspec_protocol(protocol, url)
    tuning, options = resolve_storage_options(storage_options, "fsspec")
    bucket_root = options.pop("bucket_root", None)
    full = f"{parts.netloc}{parts.path}"
    if protocol in _BUCKET_PROTOCOLS and not bucket_root:
        root, _, rest = full.partition("/")
    else:
        fs = fsspec.filesystem(protocol, **options)
        stripped = fs._strip_protocol(url)
        if bucket_root:
            root = bucket_root
        else:
            found = find_bucket_root(_fsspec_probe(fs, protocol, options, tuning),
                                     "/" + stripped.lstrip("/"))
            root = found.path
            if found.ambiguous_with:
                ambiguity = ambiguity_message(url, root, found.ambiguous_with)
        root_s = root.rstrip("/")
        rest = ("/" + stripped.lstrip("/"))[len(root_s):] if root_s != "/" else stripped
    store = _fsspec_store(protocol, root, options, tuning)
    return Location(store, _clean_domain(rest, url), ambiguity)


def names_bucket_root(url: str) -> bool:
    """True for a URL naming a whole bucket (``s3://bucket``, ``gs://bucket/``), which
    names no domain.

    >>> names_bucket_root("s3://bucket/"), names_bucket_root("s3://bucket/home/a.h5")
    (True, False)
    """
    parts = urlsplit(url)
    bucketed = parts.scheme in ("s3", "s3a") or parts.scheme in _BUCKET_PROTOCOLS
    return bucketed and not parts.path.strip("/")


def open_prefix(url: str, storage_options: Mapping[str, Any] | None = None
                ) -> tuple[ObjectStore, str]:
    """Resolve a URL naming a bucket or a folder (not one domain) to the store of its
    bucket root and the key prefix inside it ("" or ending in "/").

    >>> store, prefix = open_prefix("s3://bucket/home/me/", {"anon": True})
    >>> store.root_url, prefix
    ('s3://bucket', 'home/me/')
    """
    refuse_dot_segments(url)  # named as given, not as the probe's URL
    refuse_empty_segments(url)
    probe = open_location(url.rstrip("/") + "/" + _PROBE, storage_options)
    prefix = probe.domain[:-len(_PROBE)]
    return probe.store, prefix


_PROBE = ".h5dask-probe"  # a domain name that never exists: asks only where its bucket is


def open_object(url: str, storage_options: Mapping[str, Any] | None = None
                ) -> tuple[ObjectStore, str]:
    """The store of the directory (for S3, the bucket) holding the object ``url`` names,
    and the object's key in it: for ranged reads of one file (the source of a load, the
    file a linked dataset names). ``storage_options`` as for :func:`open_location`, the
    tuning ones included.

    >>> store, key = open_object("file:///data/run%201/x.h5", {"max_concurrency": 4})
    >>> (store.root_url, key, store.max_concurrency)
    ('file:///data/run%201', 'x.h5', 4)
    """
    parts = urlsplit(url)
    refuse_dot_segments(url, parts)
    protocol = _protocol(parts.scheme)
    if protocol in ("s3", "s3a"):
        return _s3_store(parts.netloc, storage_options), check_key(parts.path[1:])
    if protocol == "file":
        path = local_path(url, parts)
        return _local_store(os.path.dirname(path), storage_options), \
            check_key(os.path.basename(path))

    import fsspec

    _check_fsspec_protocol(protocol, url)
    tuning, options = resolve_storage_options(storage_options, "fsspec")
    path = fsspec.get_filesystem_class(protocol)._strip_protocol(url)
    directory, _, key = path.rpartition("/")
    return _fsspec_store(protocol, directory, options, tuning), check_key(key)

