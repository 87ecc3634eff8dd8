"""Any fsspec file system as a bucket root (memory://, gcs://, abfs://, ...)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import fsspec
from fsspec.asyn import AsyncFileSystem

from ..errors import H5DaskError, StorageError, StoragePermissionError
from .base import (
    ObjectStore,
    ObjectVersion,
    TransientError,
    changed_since,
    etag_of,
    range_past_the_end,
    whole_object_for_range,
)
from .keys import check_key
from .settings import DEFAULT_TUNING, StoreTuning, body_limit
from .sync import sync


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
#: protocols whose GETs h5dask makes itself through fsspec's aiohttp session
_HTTP = frozenset({"http", "https"})
#: the size bound of the whole-object read under way (:meth:`FsspecObjectStore.get_bounded`),
#: 0 if none: what its wait may grow with, as a ranged read's does with its length
_SIZE_BOUND: contextvars.ContextVar[int] = contextvars.ContextVar("size_bound", default=0)


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
        #: http(s) reads of a version send If-Match with its ETag; other file systems
        #: take no condition (see :meth:`_get_version`)
        self.verifies_versions = protocol in _HTTP

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

    async def _run(self, name: str, *args: Any, body: int = 0, **kwargs: Any) -> Any:
        """One call of the file system; ``body``: the bytes it transfers, if known (its
        wait then grows with them, see :func:`~.settings.body_limit`)."""
        if not isinstance(self.fs, AsyncFileSystem):
            return await self._settle(name, asyncio.to_thread(getattr(self.fs, name), *args,
                                                              **kwargs), bounded=False)
        # listings are as long as the tree is large: not bounded by the request timeout
        return await self._settle(name, getattr(self.fs, "_" + name)(*args, **kwargs),
                                  bounded=name not in _LISTINGS, where=args[0] if args else None,
                                  body=body)

    async def _settle(self, name: str, call: Awaitable[Any], *, bounded: bool,
                      where: Any = None, body: int = 0) -> Any:
        """Await one call of the file system, on its own loop as fsspec runs it, within
        ``timeout`` when ``bounded`` (:func:`~.settings.body_limit` of ``body`` for a call
        transferring ``body`` bytes: the client cannot tell a slow body from a stalled
        one, so a slow but steady transfer is given the time it needs at the slowest
        rate that is not a stall); its failures as h5dask's (retried or not)."""
        limit = body_limit(self.tuning.timeout, body)
        try:
            if isinstance(self.fs, AsyncFileSystem) and not self.fs.asynchronous:
                call = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                    call, self.fs.loop))  # type: ignore[arg-type]
            if not bounded:
                return await call
            # the client's own waits may be long (aiohttp's: 5 minutes per request);
            # cancelling the wait cancels the request
            async with asyncio.timeout(limit):
                return await call
        except (FileNotFoundError, FileExistsError, TransientError, H5DaskError):
            raise
        except PermissionError as exc:
            raise StoragePermissionError(f"{self.root_url}: {exc}") from exc
        except TimeoutError as exc:
            raise TransientError(f"{name}: no complete answer in {limit:.3g} s "
                                 f"{exc}".rstrip(), timed_out=True) from exc
        except OSError as exc:
            raise TransientError(str(exc)) from exc
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
            raise StorageError(f"{name} of {self.root_url if where is None else where} "
                               f"failed: {type(exc).__name__}: {exc}",
                               key="" if where is None else str(where), attempts=1) from exc

    async def _http_get(self, key: str, byte_range: tuple[int, int] | None,
                        version: ObjectVersion | None = None) -> bytes | None:
        """A GET through fsspec's http file system's session, bounded by ``timeout`` to
        the answer and between pieces of its body, never for the whole body: a slow but
        progressing transfer completes, a stalled one is named as such. Its status says
        whether a ranged GET was answered with the range (206) or the whole object (200).
        ``version`` with an ETag: sent as If-Match (412: ObjectChangedError), and the
        answer's own ETag compared, for a server that ignores If-Match."""
        fs, url = self.fs, self._full(key)
        kwargs = dict(fs.kwargs)
        etag = None if version is None else etag_of(version)
        if etag is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "If-Match": etag}
        if byte_range is not None:
            start, stop = byte_range
            if start == stop:
                return b""
            kwargs["headers"] = {**(kwargs.get("headers") or {}),
                                 "Range": f"bytes={start}-{stop - 1}"}
        session = await fs.set_session()
        try:
            async with asyncio.timeout(self.tuning.timeout):
                response = await session.get(fs.encode_url(url), **kwargs)
        except TimeoutError as exc:
            raise TransientError(f"GET: no answer in {self.tuning.timeout:g} s",
                                 timed_out=True) from exc
        async with response:
            if etag is not None and version is not None:
                answered = (response.headers.get("ETag") or "").strip('"')
                if response.status == 412 or (response.status < 300 and answered
                                              and answered != etag.strip('"')):
                    raise changed_since(self, key, version, f"the server answered "
                                        f"{response.status}, ETag {answered or 'untold'}")
            if response.status == 416 and byte_range is not None:
                raise range_past_the_end(self, key, byte_range, response.headers.get(
                    "Content-Range", "").rpartition("/")[2])
            fs._raise_not_found_for_status(response, url)
            size = response.content_length
            if byte_range is not None and response.status == 200 and (
                    byte_range[0] > 0 or (size or 0) > byte_range[1]):
                # the server ignored Range: its body is the object, not the range (only
                # a range from 0 covering the whole object is its body), and is not read
                raise whole_object_for_range(self, key, byte_range, size)
            body = bytearray()
            while True:
                try:
                    async with asyncio.timeout(self.tuning.timeout):
                        piece = await response.content.readany()
                except TimeoutError as exc:
                    raise TransientError(
                        f"GET: the body stalled: no byte in {self.tuning.timeout:g} s after "
                        f"{len(body)} of {'?' if size is None else size} bytes",
                        stalled=True) from exc
                if not piece:
                    return bytes(body)
                body += piece

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        if self.protocol in _HTTP:
            try:
                return await self._settle("GET", self._http_get(key, byte_range),
                                          bounded=False, where=self._full(key))
            except FileNotFoundError:
                return None
        path = self._full(key)
        try:
            if byte_range is None:  # (within a get_bounded: its bound is the length)
                return bytes(await self._run("cat_file", path, body=_SIZE_BOUND.get()))
            return bytes(await self._run("cat_file", path, start=byte_range[0],
                                         end=byte_range[1], body=byte_range[1] - byte_range[0]))
        except (FileNotFoundError, IsADirectoryError):
            return None

    async def get_bounded(self, key: str, size_bound: int, *, kind: str = "chunk"
                          ) -> bytes | memoryview | None:
        # a whole-object read (a chunk) whose size is bounded: its wait grows with the
        # bound as a ranged read's does with its length (cat_file shows no progress)
        token = _SIZE_BOUND.set(size_bound)
        try:
            return await super().get_bounded(key, size_bound, kind=kind)
        finally:
            _SIZE_BOUND.reset(token)

    def get_bounded_sync(self, key: str, size_bound: int, *, kind: str = "chunk"
                         ) -> bytes | memoryview | None:
        return sync(self.get_bounded(key, size_bound, kind=kind))  # (no blocking client)

    async def _get_version(self, key: str, byte_range: tuple[int, int],
                           version: ObjectVersion) -> bytes | None:
        # http(s): If-Match with the version's ETag; other fsspec file systems take no
        # condition on cat_file: read as they are (verifies_versions False)
        if not self.verifies_versions or etag_of(version) is None:
            return await self._get(key, byte_range)
        try:
            return await self._settle("GET", self._http_get(key, byte_range, version),
                                      bounded=False, where=self._full(key))
        except FileNotFoundError:
            return None

    async def _put(self, key: str, data: bytes) -> None:
        await self._run("pipe_file", self._full(key), data, body=len(data))

    async def _put_if_absent(self, key: str, data: bytes) -> bool:
        # fsspec's mode="create": s3fs sends If-None-Match: *, memory:// opens "xb";
        # file systems without one of their own look first, then write (not atomic)
        name = "_pipe_file" if isinstance(self.fs, AsyncFileSystem) else "pipe_file"
        if "mode" not in inspect.signature(getattr(self.fs, name)).parameters:
            return await super()._put_if_absent(key, data)  # an older fsspec
        try:
            await self._run("pipe_file", self._full(key), data, mode="create")
        except FileExistsError:
            return False
        return True

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
