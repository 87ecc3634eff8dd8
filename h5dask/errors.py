"""The exceptions h5dask raises.

Each is also the matching built-in exception, so ``except FileNotFoundError`` and
friends keep working, and each names the object key or URL it is about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class H5DaskError(Exception):
    """Base class of every h5dask error."""


class DomainNotFoundError(H5DaskError, FileNotFoundError):
    """No domain (no ``.domain.json``) at the URL.

    ``detail`` may be given as a function: what the URL names instead (a near-miss
    hint) costs requests, paid only when the message is shown (or ``.detail`` read),
    never by a caller that catches the error and goes on.

    >>> str(DomainNotFoundError("s3://b/x.h5", lambda: "it is a folder"))
    "no h5dask/HSDS domain at 's3://b/x.h5': its .domain.json does not exist (it is a folder)"
    """

    def __init__(self, url: str, detail: str | Callable[[], str] = "") -> None:
        super().__init__(url)
        self.url = url
        self._detail = detail

    @property
    def detail(self) -> str:
        if callable(self._detail):
            try:
                self._detail = self._detail()
            except Exception:  # a hint that cannot be had is no hint
                self._detail = ""
        return self._detail

    def __str__(self) -> str:
        message = f"no h5dask/HSDS domain at {self.url!r}: its .domain.json does not exist"
        return f"{message} ({self.detail})" if self.detail else message

    def __reduce__(self) -> tuple:  # to another process with its hint, not the function
        return (type(self), (self.url, self.detail))


class ObjectNotFoundError(H5DaskError, KeyError):
    """A group, dataset, attribute or link that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class StoragePermissionError(H5DaskError, PermissionError):
    """The object store refused the credentials or the operation."""


class StorageError(H5DaskError, OSError):
    """An object could not be read or written, after all retries."""

    def __init__(self, message: str, key: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.key = key
        self.attempts = attempts


class ObjectChangedError(StorageError):
    """A read made on condition of an object's version (the one a HEAD told) found the
    object written since: another ETag (S3 answered 412 Precondition Failed), or a local
    file whose size, times or inode moved. Its bytes there may not be the ones expected;
    callers say what to do (a linked dataset: :class:`LinkedFileChangedError`)."""


class UnverifiedLinkWarning(UserWarning):
    """A linked domain's layouts recorded no version of the files they read (written by
    HSDS's ``hsload --link``, an earlier h5dask, or from a store that tells none), so a
    file rewritten since it was linked cannot be told apart: see
    ``verify_unversioned_links`` (:mod:`h5dask.sources`)."""


class MetadataError(H5DaskError, ValueError):
    """A metadata JSON object is malformed or violates the HSDS schema."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid metadata object {key!r}: {problem}")
        self.key = key
        self.problem = problem


@contextmanager
def malformed_metadata(key: str) -> Iterator[None]:
    """Turn what malformed metadata makes the parsers raise (a TypeError from a string
    where a number belongs, a KeyError for a missing field, ...) into a MetadataError
    naming the object; h5dask's own errors pass through.

    >>> try:
    ...     with malformed_metadata("db/x/.group.json"):
    ...         int([])
    ... except MetadataError as exc:
    ...     exc.problem.split(":")[0]
    'malformed (TypeError'
    """
    try:
        yield
    except H5DaskError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError) as exc:
        raise MetadataError(key, f"malformed ({type(exc).__name__}: {exc})") from exc


class CorruptChunkError(H5DaskError, ValueError):
    """A chunk object cannot be decoded or has the wrong size."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"corrupt chunk object {key!r}: {problem}")
        self.key = key
        self.problem = problem


class SizeLimitError(H5DaskError, ValueError):
    """Something is larger than a documented limit of h5dask; the message names it and
    says how to raise the limit."""


class LoadOptionError(H5DaskError, ValueError):
    """An option of :func:`h5dask.load` / ``h5dask load`` that cannot be used as given
    (``chunks=``, ``compression=``, ``link=`` with them, ...); the message names the
    option, the value and what to give instead. Raised before anything is written."""


class LoadInProgressError(H5DaskError, RuntimeError):
    """Another run of the same load is writing the domain (its lease, see
    :mod:`h5dask.ingest.lease`, is live): the message names that run (host, pid, when it
    started) and when it can be taken over. ``h5dask load`` exits 5 (refused)."""


class LeaseLostError(LoadInProgressError):
    """``h5dask gc --delete`` lost its lease on a prefix while it deleted it (the lease
    object was deleted or rewritten by another, or gc paused past the lease's TTL): it
    stopped deleting at once. The message names the prefix and says to run gc again;
    ``h5dask gc`` exits 5 (refused)."""


class UnsupportedFilterError(H5DaskError, ValueError):
    """A dataset uses a filter h5dask cannot decode."""


class HSDSUnreadableWarning(UserWarning):
    """Data written with a codec an HSDS server cannot decode (h5dask can), e.g. LZF."""


class ReadAheadSettingWarning(UserWarning):
    """``H5DASK_READ_AHEAD_BYTES`` holds a value that is not a size; the warning names the
    variable and the default that applies instead."""


class SourceFileError(H5DaskError, OSError):
    """A file given to ``h5dask load`` that h5py cannot read (not HDF5, truncated, or an
    object in it that HDF5 itself fails on); the message names the file and the object."""


class SourceNotFoundError(SourceFileError, FileNotFoundError):
    """The file given to ``h5dask load`` does not exist (the message names it)."""


class UnsupportedTypeError(H5DaskError, TypeError):
    """A datatype h5dask cannot represent."""


class ValueOutOfRangeError(H5DaskError, ValueError):
    """Values that do not fit the integer dtype they would be stored as (they would wrap
    around), e.g. a region write into an int16 variable."""


class InvalidReferenceError(H5DaskError, ValueError):
    """An object-reference value that is not an object id: not ASCII, not of the
    ``g-``/``d-``/``t-`` form, or a prefix other than ``groups/``, ``datasets/``,
    ``datatypes/`` (write ``obj.id``, ``obj`` itself, or ``""`` for a null reference)."""


class IncompatibleDatasetError(H5DaskError, TypeError):
    """An existing dataset required with a dtype its values would not fit (as h5py's
    ``require_dataset`` TypeError)."""


class ReadOnlyError(H5DaskError, PermissionError):
    """A write was attempted on a domain opened read-only."""


class InvalidKeyError(H5DaskError, ValueError):
    """An object key that would escape the bucket root (or alias another: an empty, '.'
    or '..' segment). A URL a user gives with such a segment is a :class:`DomainURLError`
    (see :func:`h5dask.storage.refuse_dot_segments`)."""


class InvalidGroupPathError(H5DaskError, ValueError):
    """A ``group=`` that is not a path of group names ("/", "a" or "/a/b"): an empty
    name ("a//b"), "." or "..", or not a string."""


class DomainExistsError(H5DaskError, FileExistsError):
    """A new domain was to be created where one already exists."""


class BucketNotFoundError(H5DaskError, FileNotFoundError):
    """The bucket a URL names does not exist."""


class NotADomainError(DomainNotFoundError):
    """The URL names a plain file (HDF5, netCDF, ...), not an h5dask/HSDS domain."""

    def __init__(self, url: str, message: str) -> None:
        FileNotFoundError.__init__(self, message)
        self.url = url
        self._detail = ""

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple:
        return (type(self), (self.url, self.args[0]))


class DomainURLError(H5DaskError, ValueError):
    """A URL that cannot name a domain, or not the one it seems to: a bucket alone, a
    folder (ending in "/") where a new domain is to be written, a ``..`` segment, a
    ``file://`` URL with a host; the message shows a URL that would do."""


class StorageOptionsError(H5DaskError, ValueError):
    """A ``storage_options`` name no back end knows, or a value it cannot use."""


class UnsupportedURLError(H5DaskError, ValueError):
    """A URL scheme h5dask cannot use for this purpose (e.g. a domain at http://)."""


class AmbiguousBucketRootError(H5DaskError, ValueError):
    """A file:// domain path could belong to two buckets; ``bucket_root`` must say which."""


class SourceFormatError(SourceFileError, ValueError):
    """A file to import is not HDF5/netCDF-4 (netCDF-3, or not HDF5 at all)."""


class UnfollowedLinkWarning(UserWarning):
    """``engine="h5cloud"`` met an external link (to an object of another file or
    domain) or a soft link to a group, which it does not follow: what the link leads to
    is not in the Dataset or DataTree there (h5py, so h5netcdf, would follow it)."""


class LocalLinkWarning(UserWarning):
    """A linked domain references a local file: readable only where that path exists."""


class FolderNotEmptyError(H5DaskError, IsADirectoryError):
    """``rm`` of a folder or prefix holding domains, without ``recursive=True``."""


class MissingExtraError(H5DaskError, ImportError):
    """A feature needs packages of an extra that is not installed (``pip install
    ".[EXTRA]"`` in the h5dask clone)."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(f"{feature} needs {missing}, which is not installed: install "
                         f'h5dask\'s "{extra}" extra: pip install ".[{extra}]" in the '
                         "h5dask clone")
        self.extra = extra


class LinkedReferenceRefused(H5DaskError, PermissionError):
    """A linked dataset (an ``H5D_*_REF`` layout) names a file outside the domain's own
    store, or a ``file_uri`` that is not a valid object URL.

    By default a linked reference may only name an object of the domain's store (for
    S3, any bucket of the same endpoint; for ``file://``, a file inside the bucket
    root); others need ``allowed_link_prefixes`` (see :mod:`h5dask.storage.links`).
    ``.dataset`` and ``.uri`` say which dataset named which URI.
    """

    def __init__(self, message: str, dataset: str = "", uri: str = "") -> None:
        super().__init__(message)
        self.dataset = dataset
        self.uri = uri

    def __str__(self) -> str:  # OSError would prefix an errno; keep the message
        return str(self.args[0]) if self.args else ""


class LinkedFileChangedError(H5DaskError, ValueError):
    """The HDF5 file a linked dataset reads its chunks from is not the file that was
    linked: its size differs from the one ``h5dask load --link`` recorded, or it was
    written since and its own metadata no longer places the dataset's chunks where the
    layout says (:mod:`h5dask.linked_files`), so the layout's byte offsets may point at
    other data; or it was written after the session accepted it, while its chunks were
    being read (each linked read is conditional on the version accepted). ``.dataset``
    names the dataset, ``.uri`` the file; re-open the domain, or reload it with
    ``--link`` (or restore the file)."""

    def __init__(self, message: str, dataset: str = "", uri: str = "") -> None:
        super().__init__(message)
        self.dataset = dataset
        self.uri = uri
