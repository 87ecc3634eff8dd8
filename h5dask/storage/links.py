"""Which files a linked dataset may read: the rule for ``file_uri`` in HSDS's linked layouts.

A linked dataset (``H5D_CHUNKED_REF``, ``H5D_CHUNKED_REF_INDIRECT``, ``H5D_CONTIGUOUS_REF``)
names the HDF5 file holding its chunks by a URI in its metadata. A domain is data, often
written by someone else, so opening one must not make the reader fetch whatever it names
(``file:///etc/passwd``, a credentials file, an internal ``http://`` service). As HSDS
resolves ``file_uri`` only through its own storage, h5dask resolves it, by default, only
inside the domain's own store:

- S3: any bucket of the same endpoint (``s3://bucket/key`` or HSDS's ``bucket/key``),
  read with the domain store's credentials and settings;
- ``file://``: a file inside the domain's bucket root (``file:///abs/path``, or HSDS's
  ``BUCKET/key``), after resolving ``..`` and symlinks;
- other fsspec protocols: an object under the domain store's root.

Anything else (another scheme, an absolute path outside the root, ``http(s)://``, S3
from a ``file://`` domain) raises :class:`~h5dask.errors.LinkedReferenceRefused` before
any request is made, unless it starts with one of the URL prefixes the reader allows:
``allowed_link_prefixes=[...]`` (``h5dask.File``, ``xr.open_dataset(engine="h5cloud")``,
``load_file``) or, when that is not given, the comma-separated environment variable
``H5DASK_ALLOWED_LINK_PREFIXES``. A URI that is not a clean object URL (``.``/``..`` or
empty segments, control characters, a query or fragment, a bad host) is refused always.

>>> from h5dask.storage.local import LocalObjectStore
>>> policy = LinkPolicy.from_option(["file:///data/cmip6/"])
>>> policy.allows("file:///data/cmip6/tas.nc"), policy.allows("file:///data/cmip6x/tas.nc")
(True, False)
>>> store, key = policy.resolve("file:///tmp/root/files/x.h5", LocalObjectStore("/tmp/root"),
...                             "dataset '/x'")
>>> key
'files/x.h5'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import LinkedReferenceRefused
from .base import ObjectStore

#: the environment variable read when no ``allowed_link_prefixes`` is given
ENV_VAR = "H5DASK_ALLOWED_LINK_PREFIXES"
#: the environment variable read when no ``verify_unversioned_links`` is given ("1",
#: "true", "yes": on)
VERIFY_ENV_VAR = "H5DASK_VERIFY_UNVERSIONED_LINKS"

#: the longest ``file_uri`` accepted (PATH_MAX on Linux; S3 keys are at most 1024 bytes)
MAX_URI_LENGTH = 4096


@dataclass(frozen=True)
class LinkPolicy:
    """The URL prefixes outside the domain's store that linked datasets may read, in
    canonical form (see :func:`canonical_url`)."""

    allowed_prefixes: tuple[str, ...] = ()
    #: check the layouts that recorded no version of their file against the file's own
    #: metadata (:mod:`h5dask.sources`); else they are read unverified, with a warning
    verify_unversioned: bool = False

    @classmethod
    def from_option(cls, prefixes: Iterable[str] | str | None = None,
                    environ: Mapping[str, str] | None = None,
                    verify_unversioned: bool | None = None) -> LinkPolicy:
        """The policy of ``allowed_link_prefixes``: URL prefixes such as
        ``"file:///data/cmip6/"``, ``"s3://public-bucket/"`` or ``"https://host/files/"``
        (a scheme alone, ``"s3://"``, allows every URL of it; not ``file://``: the root
        of the local file system is refused as a prefix). None: the comma-separated
        ``H5DASK_ALLOWED_LINK_PREFIXES``, else nothing beyond the domain's store.

        ``verify_unversioned`` (``verify_unversioned_links``): None reads
        ``H5DASK_VERIFY_UNVERSIONED_LINKS``.

        >>> LinkPolicy.from_option(None, environ={ENV_VAR: "s3://a/, https://h/x"})
        LinkPolicy(allowed_prefixes=('s3://a/', 'https://h/x'), verify_unversioned=False)
        """
        env = os.environ if environ is None else environ
        if verify_unversioned is None:
            verify_unversioned = env.get(VERIFY_ENV_VAR, "").strip().lower() in (
                "1", "true", "yes", "on")
        if prefixes is None:
            prefixes = [p.strip() for p in env.get(ENV_VAR, "").split(",") if p.strip()]
            where = f"the environment variable {ENV_VAR}"
        else:
            where = "allowed_link_prefixes"
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        out = []
        for prefix in prefixes:
            has_scheme = isinstance(prefix, str) and bool(urlsplit(prefix).scheme)
            canonical = canonical_url(prefix) if has_scheme else None
            if canonical is None:
                raise ValueError(
                    f"{where}: {prefix!r} is not a URL prefix with a scheme (examples: "
                    "'file:///data/', 's3://bucket/', 'https://host/path/')")
            if canonical == "file:///":
                # also what 'file://$DIR/' gives with DIR unset: never every local file
                raise ValueError(
                    f"{where}: {prefix!r} would allow every local file (credentials "
                    "included); name the directories linked files are in, e.g. "
                    "'file:///data/'")
            out.append(canonical)
        return cls(tuple(out), bool(verify_unversioned))

    def allows(self, url: str) -> bool:
        """Whether ``url`` starts with an allowed prefix (whole path segments: the prefix
        ``file:///data`` allows ``file:///data/x.h5``, not ``file:///data2/x.h5``)."""
        canonical = canonical_url(url)
        if canonical is None:
            return False
        return any(canonical == p or canonical.startswith(p if p.endswith("/") else p + "/")
                   for p in self.allowed_prefixes)

    def resolve(self, uri: str, store: ObjectStore, dataset: str) -> tuple[ObjectStore, str]:
        """The store and key of the file ``uri`` names, for ``dataset`` (a name for
        messages) of a domain in ``store``; raises LinkedReferenceRefused before any I/O
        if the reference is malformed, or outside ``store`` and not allowed."""
        problem = malformed(uri)
        found = None
        if problem is None:
            try:
                found = store.locate(uri)
            except ValueError as exc:  # an invalid bucket name or key
                problem = str(exc)
        if problem is not None:
            raise LinkedReferenceRefused(
                f"{dataset} links to the file {uri!r}, which is not a valid object URL "
                f"({problem}); the domain's metadata is wrong (or hostile) and h5dask "
                "does not read it.", dataset, str(uri))
        if found is not None:
            return found
        if not self.allows(uri):
            suggestion = (canonical_url(uri) or uri).rsplit("/", 1)[0] + "/"
            raise LinkedReferenceRefused(
                f"{dataset} links to the file {uri!r}, outside the domain's store "
                f"{store.root_url}: by default a linked dataset may only read objects of "
                "its domain's own store (on S3, any bucket of the same endpoint; on "
                "file://, files inside the bucket root). If you trust this domain, "
                f"allow it with allowed_link_prefixes=[{suggestion!r}] (h5dask.File, "
                f"xr.open_dataset(engine='h5cloud'), load_file) or {ENV_VAR}.",
                dataset, uri)
        from . import open_object

        scheme = urlsplit(uri).scheme
        real = canonical_url(uri) if scheme in ("", "file") else None
        options = store.tuning_options()
        if scheme in ("http", "https"):
            # a redirect leaves the allowed prefix (an open redirect on an allowed host
            # reaching an internal service): aiohttp raises TooManyRedirects when the
            # count of redirects reaches max_redirects, so 1 follows none
            options["max_redirects"] = 1
        try:  # a local file by its real path, as allows() judged it
            return open_object(real or uri, options)
        except (ValueError, ImportError) as exc:
            raise LinkedReferenceRefused(
                f"{dataset} links to the file {uri!r}, which is allowed but cannot be "
                f"opened: {exc}", dataset, uri) from exc


def malformed(uri: object) -> str | None:
    """What makes ``uri`` unfit to name an object (None: nothing): ``.``, ``..`` or empty
    path segments, control characters, backslashes or surrounding blanks, more than
    :data:`MAX_URI_LENGTH` characters, a query or fragment, a URL with no host or a bad
    port.

    >>> malformed("x/../../etc/hostname"), malformed("http://http://127.0.0.1/secret")
    ("a '.' or '..' path segment", 'an empty path segment')
    >>> malformed("s3://bucket/files/x.h5") is None
    True
    """
    if not isinstance(uri, str) or not uri:
        return "not a non-empty string"
    if len(uri) > MAX_URI_LENGTH:
        return f"longer than {MAX_URI_LENGTH} characters"
    if not uri.isprintable() or "\\" in uri:
        return "control characters or a backslash"
    if uri != uri.strip():
        # urlsplit drops leading blanks, other parsers do not: no URL means two things
        return "leading or trailing white space"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return str(exc)
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        return "a query or fragment"
    if parts.scheme and parts.scheme != "file" and not parts.netloc:
        return "no host or bucket"
    path = parts.path
    if parts.scheme or path.startswith("/"):
        if not path.startswith("/"):
            return "no object path"
        path = path[1:]
    for text in (path, unquote(path)):
        segments = text.split("/")
        if any(s in (".", "..") for s in segments):
            return "a '.' or '..' path segment"
        if any(s == "" for s in segments):
            return "an empty path segment"
    return None


def canonical_url(url: str) -> str | None:
    """``url`` in the form allow-list prefixes are compared in: the scheme (and an HTTP
    host) in lower case, ``s3a`` as ``s3``; a local path or ``file://`` URL as the
    ``file://`` URL of its real path (symlinks resolved). None for what is not
    absolute (HSDS's relative ``bucket/key`` form resolves only inside the domain's store).

    >>> canonical_url("S3A://Bucket/x.h5"), canonical_url("https://Host:8443/a")
    ('s3://Bucket/x.h5', 'https://host:8443/a')
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme == "file" or (not scheme and url.startswith("/")):
        if parts.netloc not in ("", "localhost"):
            return None
        path = unquote(parts.path) if scheme else url
        real = Path(os.path.realpath(path or "/")).as_uri()
        return real + ("/" if path.endswith("/") and not real.endswith("/") else "")
    if not scheme:
        return None
    scheme = "s3" if scheme == "s3a" else scheme
    host = parts.netloc.lower() if scheme in ("http", "https") else parts.netloc
    return f"{scheme}://{host}{parts.path}"


__all__ = ["ENV_VAR", "VERIFY_ENV_VAR", "LinkPolicy", "canonical_url", "malformed"]
