"""Any fsspec file system as a bucket root (memory://, gcs://, abfs://, ...)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import fsspec
from fsspec.asyn import AsyncFileSystem

from ..errors import H5DaskError, StorageError, StoragePermissionError
from .base import ObjectStore, ObjectVersion, TransientError
from .keys import check_key
from .settings import DEFAULT_TUNING, StoreTuning


def _dropped_response_errors() -> tuple[type[BaseException], ...]:
    """aiohttp's errors for a response cut short (http(s), gcs, abfs file systems use
    it); none where it is not installed."""
    try:
        import aiohttp
    except ImportError:
        return ()
    return (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)


_DROPPED_RESPONSE = _dropped_response_errors()
#: calls that walk a tree, as long as it is large: not bounded by the request timeout
_LISTINGS = frozenset({"find", "ls", "walk"})


class FsspecObjectStore(ObjectStore):
    """The objects under ``root`` of an fsspec file system.

    >>> store = FsspecObjectStore("memory", "/bucket")
    >>> store.root_url
    'memory:///bucket'
    """

    def __init__(self, protocol: str, root: str, options: tuple = (),
                 tuning: StoreTuning = DEFAULT_TUNING["fsspec"]) -> None:
        super().__init__(tuning)
        self.protocol = protocol
        self.root = root.rstrip("/")
        self.options = options  # frozen (see base.freeze): part of the cache key
        if "://" in self.root:  # a URL-rooted file system (http, https)
            self.root_url = self.root
        elif protocol == "memory":
            self.root_url = f"memory://{self.root}"
        else:
            self.root_url = f"{protocol}://{self.root.lstrip('/')}"
        self.fs = fsspec.filesystem(protocol, **_thaw(options))

    def _init_args(self) -> tuple:
        return (self.protocol, self.root, self.options, self.tuning)

    @property
    def identity(self) -> str:
        """``root_url`` and the file system's fsspec token, which its options (endpoint,
        credentials) determine: ``s3://bucket`` through two endpoints are two roots."""
        return f"{self.root_url}#{self.fs._fs_token}"

    def locate(self, url: str) -> tuple[ObjectStore, str] | None:
        """This store and the key of an object under its root, named by a URL of its
        protocol.

        >>> FsspecObjectStore("memory", "/bucket").locate("memory://bucket/files/x.h5")[1]
        'files/x.h5'
        """
        if urlsplit(url).scheme != self.protocol:
            return None
        path = self.fs._strip_protocol(url)
        root = self.fs._strip_protocol(self.root).rstrip("/")
        if not path.startswith(root + "/"):
            return None
        return self, check_key(path[len(root) + 1:])

    def _full(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    async def _run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if not isinstance(self.fs, AsyncFileSystem):
                return await asyncio.to_thread(getattr(self.fs, name), *args, **kwargs)
            call = getattr(self.fs, "_" + name)(*args, **kwargs)
            if not self.fs.asynchronous:  # on the file system's own loop, as fsspec runs it
                call = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self.fs.loop))
            if name in _LISTINGS:  # as long as the tree is large
                return await call
            # the client's own waits may be long (aiohttp's: 5 minutes per request);
            # cancelling the wait cancels the request
            async with asyncio.timeout(self.tuning.timeout):
                return await call
        except FileNotFoundError:
            raise
        except PermissionError as exc:
            raise StoragePermissionError(f"{self.root_url}: {exc}") from exc
        except TimeoutError as exc:
            raise TransientError(f"{name}: no answer in {self.tuning.timeout:g} s "
                                 f"{exc}".rstrip(), timed_out=True) from exc
        except OSError as exc:
            raise TransientError(str(exc)) from exc
        except H5DaskError:
            raise
        except _DROPPED_RESPONSE as exc:
            # a body cut short of its Content-Length (aiohttp checks it) or a connection
            # dropped before the answer: never data, and another attempt can succeed
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            # the client's own errors (aiohttp's InvalidUrlClientError for a URL it cannot
            # fetch, an HTTP status, ...): retried only for a status worth retrying
            status = getattr(exc, "status", None)
            if isinstance(status, int) and (status in (408, 429) or status >= 500):
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            where = f"{args[0]}" if args else self.root_url
            raise StorageError(f"{name} of {where} failed: {type(exc).__name__}: {exc}",
                               key=str(args[0]) if args else "", attempts=1) from exc

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        path = self._full(key)
        try:
            if byte_range is None:
                return bytes(await self._run("cat_file", path))
            return bytes(await self._run("cat_file", path, start=byte_range[0],
                                         end=byte_range[1]))
        except (FileNotFoundError, IsADirectoryError):
            return None

    async def _put(self, key: str, data: bytes) -> None:
        await self._run("pipe_file", self._full(key), data)

    async def _size(self, key: str) -> int | None:
        found = await self._stat(key)
        return None if found is None else found.size

    async def _stat(self, key: str) -> ObjectVersion | None:
        try:
            info = await self._run("info", self._full(key))
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        tags = [f"{name}={info[name]}" for name in _VERSION_FIELDS if info.get(name) is not None]
        return ObjectVersion(int(info["size"]), " ".join(tags) or None, _mtime(info))

    async def _delete(self, key: str) -> None:
        try:
            await self._run("rm_file", self._full(key))
        except FileNotFoundError:
            pass

    async def _list(self, prefix: str) -> list[str]:
        base = self._full(prefix.rstrip("/")) if prefix else self.root
        try:
            found = await self._run("find", base)
        except FileNotFoundError:
            return []
        return [self._key_of(p) for p in found]

    def _key_of(self, path: str) -> str:
        """The key of a path ``find`` returned."""
        strip = self.fs._strip_protocol(self.root).rstrip("/")
        p = self.fs._strip_protocol(path)
        return p[len(strip) + 1:] if strip else p.lstrip("/")


    async def _list_modified(self, prefix: str) -> dict[str, float]:
        base = self._full(prefix.rstrip("/")) if prefix else self.root
        try:
            found = await self._run("find", base, detail=True)
        except FileNotFoundError:
            return {}
        return {self._key_of(p): _mtime(info) for p, info in found.items()}


#: fields of fsspec info dicts that change when an object is written (each file system
#: has its own: S3 and HTTP ETags, GCS generations and MD5s, modification times)
_VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "version_id", "mtime",
                   "LastModified", "last_modified", "updated", "created")


def _mtime(info: dict) -> float:
    """An fsspec info dict's modification time (each file system names it differently)."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return time.time()  # unknown: treated as new (never old enough to collect)


def _thaw(options: tuple) -> dict:
    def thaw(v: Any) -> Any:
        if isinstance(v, tuple) and all(isinstance(i, tuple) and len(i) == 2 for i in v) and v:
            return {k: thaw(x) for k, x in v}
        return v

    return {k: thaw(v) for k, v in options}
