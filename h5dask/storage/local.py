"""A directory on a local or shared file system as a bucket root (file:// URLs).

Writes are atomic (a temporary file renamed into place), so a reader or a crash
never sees half an object, as on S3.

Someone who can write the bucket directory (a shared project directory) must not make
h5dask read, write, delete or list anything outside it: every call goes through
directory descriptors opened one path component at a time from the root, never
following a symlink (``O_NOFOLLOW``), so a directory swapped for a symlink after a key
was checked is refused (:class:`InvalidKeyError`) instead of followed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ..errors import H5DaskError, InvalidKeyError, StoragePermissionError
from .base import ObjectStore, ObjectVersion, changed_since
from .settings import DEFAULT_TUNING, StoreTuning

# O_NOFOLLOW/O_DIRECTORY are POSIX; where they, or calls relative to a directory
# descriptor, do not exist (Windows) the calls go by path names and the check of _path
# is all there is
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BENEATH = (_O_NOFOLLOW != 0 and os.scandir in os.supports_fd
            and {os.open, os.mkdir, os.rmdir, os.unlink, os.rename, os.stat}
            <= os.supports_dir_fd)
_DIRECTORY = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW
#: the longest file name most file systems allow (ext4, XFS, APFS, NTFS)
_NAME_MAX = 255
#: how the names of in-flight writes begin (listings skip them)
_TEMPORARY = ".tmp-"

#: an open directory: its descriptor, or (where calls take none: Windows) its path
_Directory = int | str


def _in(directory: _Directory, name: str) -> tuple[str, int | None]:
    """``name`` inside ``directory`` as the (path, dir_fd) arguments of an ``os`` call."""
    if isinstance(directory, int):
        return name, directory
    return os.path.join(directory, name), None


def _close(directory: _Directory) -> None:
    if isinstance(directory, int):
        os.close(directory)


def _subdirectory(directory: _Directory, name: str, *, create: bool = False
                  ) -> _Directory:
    """The directory ``name`` inside ``directory``, opened without following a symlink
    (made first if it is missing and ``create``)."""
    path, dir_fd = _in(directory, name)
    if dir_fd is None:
        if create:
            os.makedirs(path, exist_ok=True)
        return path
    try:
        return os.open(name, _DIRECTORY, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    with suppress(FileExistsError):  # made meanwhile by another writer
        os.mkdir(name, dir_fd=dir_fd)
    return os.open(name, _DIRECTORY, dir_fd=dir_fd)


def _is_symlink(directory: _Directory, name: str, exc: OSError) -> bool:
    """Whether opening ``name`` with O_NOFOLLOW failed with ``exc`` because it is a
    symlink: ELOOP (EMLINK on FreeBSD), or ENOTDIR when a directory was asked for."""
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return True
    if exc.errno != errno.ENOTDIR:
        return False
    path, dir_fd = _in(directory, name)
    try:
        return stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _create_temporary(directory: _Directory, name: str) -> tuple[str, int]:
    """A new empty file in ``directory`` to write ``name``'s bytes to before renaming it
    into place: its name (``.tmp-<random><name>``, within the longest name a file system
    allows) and a descriptor open for writing; private (0600) as ``mkstemp`` makes it."""
    suffix = name if len(os.fsencode(name)) <= _NAME_MAX - len(_TEMPORARY) - 16 else ""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY
    for _attempt in range(10):
        temporary = f"{_TEMPORARY}{secrets.token_hex(8)}{suffix}"
        path, dir_fd = _in(directory, temporary)
        with suppress(FileExistsError):
            return temporary, os.open(path, flags, 0o600, dir_fd=dir_fd)
    raise FileExistsError(errno.EEXIST, "no free temporary name", name)


def _write_and_rename(directory: _Directory, temporary: str, fd: int, name: str,
                      data: bytes) -> None:
    """Write ``data`` to the new file ``temporary`` (open as ``fd``) and rename it to
    ``name``, both in ``directory``; the temporary file is removed on failure."""
    source, dir_fd = _in(directory, temporary)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # rename(2) replaces a symlink named `name` itself, never its target
        os.replace(source, _in(directory, name)[0], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(source, dir_fd=dir_fd)
        raise


def _contents(directory: _Directory, prefix: str, *, recursive: bool
              ) -> Iterator[tuple[str, os.DirEntry, _Directory]]:
    """(key, entry, the directory holding it) for every regular file (not an in-flight
    write) and directory (its key ending in "/", after what it holds) in ``directory``,
    with ``prefix`` before its name. Symlinks are skipped, never followed: a directory
    swapped for one after it was listed fails to open and is skipped too. An entry's
    ``stat`` works while the iteration is at it (it is relative to ``directory``)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                key = f"{prefix}{entry.name}/"
                if recursive:
                    try:
                        child = _subdirectory(directory, entry.name)
                    except OSError:  # removed, or swapped for a symlink, meanwhile
                        continue
                    try:
                        yield from _contents(child, key, recursive=True)
                    finally:
                        _close(child)
                yield key, entry, directory
            elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(
                    _TEMPORARY):
                yield prefix + entry.name, entry, directory


def _file_version(st: os.stat_result) -> ObjectVersion:
    """A file's version: any write moves mtime; ctime moves too, also when mtime is set
    back (touch -d, cp -p); a file replaced by rename has another inode."""
    return ObjectVersion(st.st_size, f"mtime_ns={st.st_mtime_ns} ctime_ns="
                                     f"{st.st_ctime_ns} ino={st.st_ino}",
                         st.st_mtime)  # this machine's clock (an NFS server's on NFS)


class LocalObjectStore(ObjectStore):
    """The objects under one directory; keys are relative paths inside it.

    Symlinks: a key is resolved first, and one leading out of the root is refused
    (:class:`InvalidKeyError`); symlinks inside the root are followed for the
    directories holding an object and for reads, but a write replaces, and a delete
    removes, a symlink named by the key itself (as a PUT or DELETE does a key), never
    its target. A symlink swapped in after the check is refused, never followed.
    Listings report regular files and directories only: symlinks are skipped.

    >>> LocalObjectStore("/tmp/root")
    LocalObjectStore('file:///tmp/root')
    """

    #: a read of a given version compares the open file's fstat before and after it
    verifies_versions = True

    def __init__(self, root: str, tuning: StoreTuning = DEFAULT_TUNING["file"]) -> None:
        super().__init__(tuning)
        # resolved once: a root that is a symlink (or under one) means its real directory
        self.root = Path(root).resolve()
        self.root_url = self.root.as_uri()

    def _init_args(self) -> tuple:
        return (str(self.root), self.tuning)

    def url_of(self, path: str) -> str:
        """Percent-encoded, as ``root_url`` is (RFC 8089): a name holding ``%`` or
        a space opens as itself again."""
        return f"{self.root_url}/{quote(path)}"

    def _resolved(self, path: Path, key: str) -> Path:
        """``path`` (for ``key``) with symlinks resolved; refused if outside the root."""
        try:
            real = path.resolve()
        except OSError as exc:  # e.g. a symlink swapped for a file while it was resolved
            raise InvalidKeyError(f"object key {key!r} of {self.root_url} cannot be "
                                  f"resolved: {exc}") from exc
        # check_key already refused '..'; symlinks pointing outside are refused here
        if real != self.root and self.root not in real.parents:
            raise InvalidKeyError(f"object key {key!r} resolves outside {self.root_url}")
        return real

    def _path(self, key: str) -> Path:
        """The file ``key`` names, symlinks resolved; refused if outside the root."""
        return self._resolved(self.root / key, key)

    def _parent_path(self, key: str) -> tuple[Path, str]:
        """The directory that holds ``key``'s object (resolved as :meth:`_path` does) and
        the object's own name there, not resolved: a write replaces, and a delete
        removes, whatever has that name, a symlink included."""
        parent, _, name = key.rpartition("/")
        return (self._resolved(self.root / parent, key) if parent else self.root), name

    def _refuse(self, key: str, directory: _Directory, name: str, exc: OSError, *,
                creating: bool = False) -> None:
        """Raise the InvalidKeyError that ``exc``, from opening ``name`` in
        ``directory`` for ``key``, means, if it means one."""
        if _is_symlink(directory, name, exc):
            raise InvalidKeyError(
                f"object key {key!r} of {self.root_url}: {name!r} became a symlink after "
                f"the key was checked; h5dask does not follow it (it could lead out of "
                f"the root)") from exc
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidKeyError(f"object key {key[:100]!r} of {self.root_url}: a name "
                                  f"longer than the file system allows") from exc
        if creating and exc.errno == errno.ENOTDIR:
            raise InvalidKeyError(
                f"object key {key!r} cannot be stored in {self.root_url}: {name!r} is an "
                f"object there, and on a file system it cannot also be a directory; "
                f"delete it or choose another key") from exc

    def _open_directory(self, key: str, path: Path, *, create: bool = False
                        ) -> _Directory:
        """The directory ``path`` (resolved, inside the root) for ``key``, opened one
        component at a time from the root without following symlinks (made where
        missing when ``create``): a symlink put in place after :meth:`_path` checked
        the path (a race an attacker who can write the directory can win) is refused
        instead of followed out of the root."""
        handle: _Directory = str(self.root)
        if _BENEATH:
            try:
                handle = os.open(self.root, _DIRECTORY)
            except FileNotFoundError:
                if not create:
                    raise
                os.makedirs(self.root, exist_ok=True)
                handle = os.open(self.root, _DIRECTORY)
        elif create:
            os.makedirs(self.root, exist_ok=True)
        try:
            for part in path.relative_to(self.root).parts:
                child = self._enter(key, handle, part, create=create)
                _close(handle)
                handle = child
            return handle
        except BaseException:
            _close(handle)
            raise

    def _enter(self, key: str, directory: _Directory, name: str, *,
               create: bool = False) -> _Directory:
        try:
            return _subdirectory(directory, name, create=create)
        except OSError as exc:
            self._refuse(key, directory, name, exc, creating=create)
            raise

    @contextmanager
    def _directory(self, key: str, path: Path, *, create: bool = False
                   ) -> Iterator[_Directory]:
        handle = self._open_directory(key, path, create=create)
        try:
            yield handle
        finally:
            _close(handle)

    def _open_beneath(self, key: str, path: Path) -> int:
        """A read-only descriptor of the file ``path`` (resolved, inside the root),
        reached as :meth:`_open_directory` reaches directories."""
        if path == self.root:
            raise IsADirectoryError(errno.EISDIR, "the bucket root", str(path))
        with self._directory(key, path.parent) as directory:
            file, dir_fd = _in(directory, path.name)
            try:
                # O_NONBLOCK: opening a FIFO put in the bucket must not wait for a writer
                fd = os.open(file, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY,
                             dir_fd=dir_fd)
            except OSError as exc:
                self._refuse(key, directory, path.name, exc)
                raise
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # (a directory reads as no object)
            return fd
        os.close(fd)
        raise InvalidKeyError(f"object key {key!r} of {self.root_url} is not a regular "
                              f"file (a FIFO, socket or device), so not an object: "
                              f"remove it from the bucket directory")

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
            with open(self._open_beneath(key, path), "rb") as f:
                if byte_range is None:
                    return f.read()
                f.seek(byte_range[0])
                return f.read(byte_range[1] - byte_range[0])
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _read_version(self, key: str, byte_range: tuple[int, int], version: ObjectVersion
                      ) -> bytes | None:
        """:meth:`_read` of ``version`` of the file only: the open descriptor's size,
        times and inode (fstat, no other request) are compared with ``version`` before
        the read and after it, so bytes read from a file written meanwhile (in place, or
        replaced: another inode) are never answered."""
        path = self._path(key)
        try:
            fd = self._open_beneath(key, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        with open(fd, "rb") as f:
            before = os.fstat(fd)
            if stat.S_ISDIR(before.st_mode):
                return None
            self._same_version(key, before, version)
            start, stop = byte_range
            f.seek(start)
            data = f.read(stop - start)
            self._same_version(key, os.fstat(fd), version)
        return data

    def _same_version(self, key: str, st: os.stat_result, version: ObjectVersion) -> None:
        now = _file_version(st)
        if now != version:
            raise changed_since(self, key, version, f"it is version {now.tag} "
                                f"({now.size} bytes) now")

    async def _get_version(self, key: str, byte_range: tuple[int, int],
                           version: ObjectVersion) -> bytes | None:
        return await asyncio.to_thread(self._read_version, key, byte_range, version)

    def _blocking_get_version(self) -> Any:
        # a pread and two fstats: cheaper in the task's own thread than through the loop
        return self._read_version

    def _write(self, key: str, data: bytes) -> None:
        parent, name = self._parent_path(key)
        if len(os.fsencode(name)) > _NAME_MAX:
            raise InvalidKeyError(f"object key {key[:100]!r} of {self.root_url}: a name "
                                  f"longer than the file system allows")
        directory, temporary, fd = self._temporary_in(key, parent, name)
        try:
            _write_and_rename(directory, temporary, fd, name, data)
        finally:
            _close(directory)

    def _temporary_in(self, key: str, parent: Path, name: str
                      ) -> tuple[_Directory, str, int]:
        """The directory ``parent`` (made if missing), opened, and a new temporary file
        in it for ``name``'s bytes (see :func:`_create_temporary`); the caller closes
        the directory."""
        for attempt in range(3):
            directory = self._open_directory(key, parent, create=True)
            try:
                return (directory, *_create_temporary(directory, name))
            except FileNotFoundError:
                _close(directory)
                # the directory was removed (pruned: it was empty) since it was opened;
                # a new one will do
                if attempt == 2:
                    raise
            except BaseException:
                _close(directory)
                raise
        raise AssertionError("unreachable")

    @contextmanager
    def _staged(self, key: str, data: bytes) -> Iterator[tuple[str, int, str]]:
        """``data`` in a new temporary file in the directory of ``key``'s file: yields the
        temporary file's name, the directory's fd and ``key``'s own name in it; the
        temporary file (if still there) is removed and the directory closed after."""
        parent, name = self._parent_path(key)
        directory, temporary, fd = self._temporary_in(key, parent, name)
        source, dir_fd = _in(directory, temporary)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield source, dir_fd, _in(directory, name)[0]
        finally:
            with suppress(OSError):
                os.unlink(source, dir_fd=dir_fd)
            _close(directory)

    def _create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if nothing has its name: the bytes go to a temporary file
        that is then hard-linked to the name, which link(2) refuses atomically if taken
        (also on NFS); readers never see a half-written object."""
        with self._staged(key, data) as (source, dir_fd, target):
            try:
                os.link(source, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
            except FileExistsError:
                return False
            return True

    atomic_create = True
    #: compare and rename run back to back in one worker call: another writer can come
    #: in only between those two system calls
    atomic_replace = True

    def _replace(self, key: str, data: bytes, version: ObjectVersion) -> bool:
        """Overwrite ``key`` only if the file is still ``version``: the bytes go to a
        temporary file, the file's version is compared, then the temporary file is
        renamed over it."""
        with self._staged(key, data) as (source, dir_fd, target):
            try:
                st = os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISREG(st.st_mode) or _file_version(st) != version:
                return False
            os.replace(source, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return True

    async def _put_if_version(self, key: str, data: bytes, version: ObjectVersion) -> bool:
        with self._refused_writes(key):
            return await asyncio.to_thread(self._replace, key, data, version)

    async def _put_if_absent(self, key: str, data: bytes) -> bool:
        with self._refused_writes(key):
            return await asyncio.to_thread(self._create, key, data)

    @contextmanager
    def _refused_writes(self, key: str, doing: str = "written") -> Iterator[None]:
        """A write (or delete: ``doing``) the file system refuses (read-only mount, no
        permission) as the StoragePermissionError an object store's 403 gives, naming
        the key: callers that can do without writing (gc's clock probe) tell it from a
        failure. Any other OSError is raised again as its own type (what callers catch)
        naming the object key and its folder, not a temporary file and the key's last
        part only, and saying what to do."""
        try:
            yield
        except H5DaskError:
            raise
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoragePermissionError(
                    f"{self.root_url}/{key} cannot be {doing}: {exc.strerror} (errno "
                    f"{errno.errorcode.get(exc.errno or 0, exc.errno)}). The bucket "
                    "directory is read-only here: mount it read-write or give this user "
                    "write permission, or only read from it") from exc
            if exc.errno is None:  # no code to build the same error with
                raise
            try:
                named = type(exc)(exc.errno, self._failed(key, doing, exc))
            except Exception:  # an OSError type built otherwise: raised as it was
                raise exc from None
            raise named from exc

    def _failed(self, key: str, doing: str, exc: OSError) -> str:
        """What a failed write or delete of ``key`` says: the key, its folder, the
        file system's reason and what to do."""
        parent, _, name = key.rpartition("/")
        folder = self.url_of(parent) if parent else self.root_url
        reason = (f"{exc.strerror or exc} (errno "
                  f"{errno.errorcode.get(exc.errno or 0, exc.errno)})")
        if exc.errno == errno.EISDIR:
            todo = (f"a directory {name!r} is in the folder {folder} where the object's "
                    "file belongs, and on a file system a name cannot be both; "
                    + ("move or remove that directory (look at what it holds first), or "
                       "choose another key" if doing == "written" else
                       "h5dask deletes objects only: remove it by hand if it should go"))
        else:
            todo = (f"the file system refused it in the folder {folder}: fix that (free "
                    "space, quota, the mount) and try again")
        return f"object key {key!r} of {self.root_url} cannot be {doing}: {reason}; {todo}"

    def _remove(self, key: str) -> None:
        parent, name = self._parent_path(key)
        try:
            with self._directory(key, parent) as directory:
                path, dir_fd = _in(directory, name)
                os.unlink(path, dir_fd=dir_fd)  # a symlink itself, never its target
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing there to delete

    def _listing(self, prefix: str, *, recursive: bool
                 ) -> Iterator[tuple[str, os.DirEntry, _Directory]]:
        """:func:`_contents` of the directory ``prefix`` names (resolved as
        :meth:`_path` resolves a key; nothing if it is missing)."""
        key = prefix.rstrip("/")
        base = self._resolved(self.root / key, prefix) if key else self.root
        try:
            directory = self._open_directory(prefix, base)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            yield from _contents(directory, f"{key}/" if key else "", recursive=recursive)
        finally:
            _close(directory)

    def _walk(self, prefix: str) -> list[str]:
        return [key for key, _, _ in self._listing(prefix, recursive=True)
                if not key.endswith("/")]

    def _scan(self, prefix: str) -> tuple[list[str], list[str]]:
        keys, dirs = [], []
        for key, _, _ in self._listing(prefix, recursive=False):
            (dirs if key.endswith("/") else keys).append(key)
        return keys, dirs

    def _walk_modified(self, prefix: str) -> dict[str, float]:
        out = {}
        for key, entry, _ in self._listing(prefix, recursive=True):
            if key.endswith("/"):
                continue
            try:
                out[key] = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # removed meanwhile
        return out

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        return await asyncio.to_thread(self._read, key, byte_range)

    async def _put(self, key: str, data: bytes) -> None:
        with self._refused_writes(key):
            await asyncio.to_thread(self._write, key, data)

    async def _size(self, key: str) -> int | None:
        return await asyncio.to_thread(self._stat_size, key)

    def _stat_size(self, key: str) -> int | None:
        found = self._stat_file(key)
        return None if found is None else found.size

    async def _stat(self, key: str) -> ObjectVersion | None:
        return await asyncio.to_thread(self._stat_file, key)

    def _stat_file(self, key: str) -> ObjectVersion | None:
        try:  # reached as a read reaches it (inside the root, no symlinks out)
            fd = self._open_beneath(key, self._path(key))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            return None
        return _file_version(st)

    async def _delete(self, key: str) -> None:
        with self._refused_writes(key, "deleted"):
            await asyncio.to_thread(self._remove, key)

    async def _list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._walk, prefix)

    async def _list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        return await asyncio.to_thread(self._scan, prefix)

    async def _list_modified(self, prefix: str) -> dict[str, float]:
        return await asyncio.to_thread(self._walk_modified, prefix)

    def _prune(self, prefix: str) -> None:
        key = prefix.rstrip("/")
        base = self._resolved(self.root / key, prefix) if key else self.root
        if base == self.root:  # never the bucket root itself
            return
        try:
            with self._directory(prefix, base.parent) as parent:
                directory = self._enter(prefix, parent, base.name)
                try:  # its directories, deepest first (rmdir: only if empty)
                    for _, entry, holder in _contents(directory, "", recursive=True):
                        if entry.is_dir(follow_symlinks=False):
                            with suppress(OSError):
                                path, dir_fd = _in(holder, entry.name)
                                os.rmdir(path, dir_fd=dir_fd)
                finally:
                    _close(directory)
                with suppress(OSError):
                    path, dir_fd = _in(parent, base.name)
                    os.rmdir(path, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing there to prune

    async def prune(self, prefix: str) -> None:
        await asyncio.to_thread(self._prune, prefix)
