"""A directory on a local or shared file system as a bucket root (file:// URLs).

Writes are atomic (a temporary file renamed into place), so a reader or a crash
never sees half an object, as on S3.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InvalidKeyError
from .base import ObjectStore
from .settings import DEFAULT_TUNING, StoreTuning

# O_NOFOLLOW/O_DIRECTORY are POSIX; where they do not exist (Windows) the check of
# _path is all there is
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
#: the longest file name most file systems allow (ext4, XFS, APFS, NTFS)
_NAME_MAX = 255


class LocalObjectStore(ObjectStore):
    """The objects under one directory; keys are relative paths inside it.

    >>> LocalObjectStore("/tmp/root")
    LocalObjectStore('file:///tmp/root')
    """

    def __init__(self, root: str, tuning: StoreTuning = DEFAULT_TUNING["file"]) -> None:
        super().__init__(tuning)
        self.root = Path(root).resolve()
        self.root_url = self.root.as_uri()

    def _init_args(self) -> tuple:
        return (str(self.root), self.tuning)

    def _path(self, key: str) -> Path:
        try:
            path = (self.root / key).resolve()
        except OSError as exc:  # e.g. a symlink swapped for a file while it was resolved
            raise InvalidKeyError(f"object key {key!r} of {self.root_url} cannot be "
                                  f"resolved: {exc}") from exc
        # check_key already refused '..'; symlinks pointing outside are refused here
        if path != self.root and self.root not in path.parents:
            raise InvalidKeyError(f"object key {key!r} resolves outside {self.root_url}")
        return path

    def _open_beneath(self, path: Path) -> int:
        """A read-only descriptor of ``path`` (resolved, inside the root), opened one
        component at a time without following symlinks: a symlink put in place after
        :meth:`_path` checked the path (a race an attacker who can write the directory
        can win) fails to open instead of being followed out of the root."""
        if os.open not in os.supports_dir_fd:
            return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        parts = path.relative_to(self.root).parts
        fd = os.open(self.root, os.O_RDONLY | _O_DIRECTORY)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | _O_NOFOLLOW | (0 if last else _O_DIRECTORY)
                try:
                    child = os.open(part, flags, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink
                        raise InvalidKeyError(
                            f"{path.as_uri()} became a symlink while it was being read; "
                            f"h5dask does not follow it out of {self.root_url}") from exc
                    if exc.errno == errno.ENAMETOOLONG:
                        raise InvalidKeyError(
                            f"{path.as_uri()}: a name longer than the file system allows"
                        ) from exc
                    raise
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def locate(self, url: str) -> tuple[LocalObjectStore, str] | None:
        """This store and the key of a file inside the bucket root, named by
        ``file:///abs/path`` (or ``/abs/path``) or, as HSDS names them relative to the
        directory holding its buckets, ``BUCKET/key`` or ``file://BUCKET/key`` with
        ``BUCKET`` this root's name. The path is resolved first: ``..`` or a symlink
        leading out of the root gives None.

        >>> store = LocalObjectStore("/tmp/root")
        >>> store.locate("file:///tmp/root/files/x.h5")[1], store.locate("root/x.h5")[1]
        ('files/x.h5', 'x.h5')
        >>> store.locate("file:///etc/passwd") is None
        True
        """
        parts = urlsplit(url)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            path = Path(unquote(parts.path))
        elif parts.scheme == "file" or (not parts.scheme and not url.startswith("/")):
            # HSDS's form, relative to the directory that holds the buckets
            path = self.root.parent / (parts.netloc + unquote(parts.path) if parts.scheme
                                       else url)
        elif not parts.scheme:
            path = Path(url)
        else:
            return None
        if any(len(os.fsencode(part)) > _NAME_MAX for part in path.parts):
            raise ValueError(f"a name longer than {_NAME_MAX} bytes in {url[:100]!r}...")
        real = Path(os.path.realpath(path))
        if self.root not in real.parents:
            return None
        return self, real.relative_to(self.root).as_posix()

    def _read(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        path = self._path(key)
        try:
            with open(self._open_beneath(path), "rb") as f:
                if byte_range is None:
                    return f.read()
                f.seek(byte_range[0])
                return f.read(byte_range[1] - byte_range[0])
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _remove(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def _walk(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue  # an in-flight atomic write
                out.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return out

    def _scan(self, prefix: str) -> tuple[list[str], list[str]]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        keys, dirs = [], []
        try:
            with os.scandir(base) as entries:
                for entry in entries:
                    if entry.name.startswith(".tmp-"):
                        continue
                    (dirs if entry.is_dir() else keys).append(
                        prefix + entry.name + ("/" if entry.is_dir() else ""))
        except (FileNotFoundError, NotADirectoryError):
            pass
        return keys, dirs

    def _walk_modified(self, prefix: str) -> dict[str, float]:
        out = {}
        for key in self._walk(prefix):
            try:
                out[key] = (self.root / key).stat().st_mtime
            except FileNotFoundError:
                continue  # removed meanwhile
        return out

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        return await asyncio.to_thread(self._read, key, byte_range)

    async def _put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, key, data)

    async def _delete(self, key: str) -> None:
        await asyncio.to_thread(self._remove, key)

    async def _list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._walk, prefix)

    async def _list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        return await asyncio.to_thread(self._scan, prefix)

    async def _list_modified(self, prefix: str) -> dict[str, float]:
        return await asyncio.to_thread(self._walk_modified, prefix)

    def _prune(self, prefix: str) -> None:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else None
        if base is None or not base.is_dir():  # never the bucket root itself
            return
        for dirpath, _dirs, _files in os.walk(base, topdown=False):
            try:
                os.rmdir(dirpath)  # only if empty
            except OSError:
                pass

    async def prune(self, prefix: str) -> None:
        await asyncio.to_thread(self._prune, prefix)
