"""S3 (and S3-compatible stores) through obstore, the fastest client measured here."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    GenericError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from ..errors import BucketNotFoundError, StorageError, StoragePermissionError
from ..iostats import record as record_io
from .base import (
    ObjectStore,
    ObjectVersion,
    TransientError,
    cached_store,
    changed_since,
    etag_of,
)
from .keys import check_key, check_prefix
from .s3_options import S3Settings, masked_key_id
from .settings import BODY_LIMIT_CAP, BODY_PIECE, DEFAULT_TUNING, StoreTuning, body_limit
from .sync import sync

#: S3 codes and phrases that mean "try again", for errors with neither a status nor a
#: transport error kind (judged on the message without its URLs, so keys cannot match)
_TRANSIENT_MARKERS = (
    "SlowDown", "Throttl", "RequestTimeout", "InternalError", "ServiceUnavailable",
    "timed out", "timeout", "connection", "Connection", "error sending", "error decoding",
    "body", "reset", "broken pipe", "incomplete", "unexpected EOF", "eof",
)
_AUTH_MARKERS = ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId")
_STATUS_RE = re.compile(r"status code: (\d{3})|status: (\d{3})")
#: object_store's HttpErrorKind, printed in obstore's debug dump: ``HttpError { kind: X``
_HTTP_KIND_RE = re.compile(r"HttpError \{\s*kind: (\w+)")
#: transport faults worth retrying: connect/send failures, timeouts, connections dropped
#: mid-response and short bodies (Interrupted), bodies that could not be read (Decode)
_TRANSIENT_HTTP_KINDS = frozenset({"Connect", "Request", "Timeout", "Interrupted", "Decode"})
_URL_RE = re.compile(r"\w+://\S+")
#: bucket names S3-compatible stores accept (AWS's rules, plus the upper case and '_'
#: of legacy and other stores): nothing that could change the host or the path
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_MD5_RE = re.compile(r"[0-9a-f]{32}")
#: a ranged GET of at most this many bytes is one request bounded whole by ``timeout``
#: (the fast path of chunk reads: one thread hand-off); a longer or unknown body may take
#: ``timeout`` for the answer, then :func:`~.settings.body_limit` of its length
#: (:meth:`S3ObjectStore._streamed`): a slow but steady transfer completes, a stalled
#: one is cut. The body is read in one piece (no stream of pieces joined: that cost 2.5-3x
#: the CPU and a second copy of every chunk read over 1 MiB)
WHOLE_GET_MAX = 1 << 20
#: the HTTP client's own limit on a GET whose waits are bounded by asyncio, only a backstop
_STREAM_BACKSTOP = timedelta(days=1)


class _Overwritten(Exception):
    """A part of a multipart read was answered 412 (or with another ETag): the object was
    written since its first part was answered."""


_S3_CODE_RE = re.compile(r"<Code>(\w+)</Code>")
#: why a connection could not be made, from the debug dump of obstore's transport error
_DNS_RE = re.compile(r'ConnectError\(\s*"dns error"')
_REFUSED_RE = re.compile(r'ConnectError\(\s*"tcp connect error",\s*([^\s,]+),[^)]*?'
                         r'ConnectionRefused')


def connection_failure(text: str) -> str | None:
    """Why obstore could not connect, in words saying what to check; None for other
    errors.

    >>> connection_failure('uri: Some(http://h.invalid:9/b/k) ConnectError("dns error", x')
    'host name h.invalid not found (DNS): check the endpoint URL'
    """
    if _DNS_RE.search(text):
        url = _URL_RE.search(text)
        host = urlsplit(url.group(0)).hostname if url else None
        return f"host name {host} not found (DNS): check the endpoint URL"
    if _http_kind_of(text) == "Timeout":
        return "no answer in time: check that the endpoint is an S3 server and healthy"
    if "InvalidContentType" in text and "https://" in text:
        return ("the TLS handshake failed: the endpoint does not speak https; give it as "
                "http:// (or storage_options use_ssl=False)")
    refused = _REFUSED_RE.search(text)
    if refused:
        return (f"connection refused by {refused.group(1)}: check the endpoint URL and that "
                "the object store is running")
    return None


def _first_line(text: str) -> str:
    """The first line of an obstore message, without the start of the XML body it
    quotes."""
    return text.splitlines()[0].split(": <?xml")[0] if text else ""


def _status_of(text: str) -> int | None:
    """The HTTP status an obstore error reports, if it reports one."""
    m = _STATUS_RE.search(text)
    return int(m.group(1) or m.group(2)) if m else None


def _http_kind_of(text: str) -> str | None:
    """The transport error kind (Connect, Timeout, Interrupted, ...) obstore reports."""
    m = _HTTP_KIND_RE.search(text)
    return m.group(1) if m else None


def is_transient(text: str) -> bool:
    """Whether an obstore error message describes a fault worth retrying: by its HTTP
    status (408, 429, 5xx) when it has one, else by its transport error kind, else by
    S3 codes and phrases in its first part (URLs removed).

    >>> is_transient("Generic S3 error: ... in 503us - Server returned ... status: 404")
    False
    >>> is_transient("Generic S3 error: bad response from http://h/b/home/eof-connection.h5")
    False
    >>> is_transient("Generic S3 error: HTTP error\\n\\nDebug source: HttpError { kind: Timeout")
    True
    """
    status = _status_of(text)
    if status is not None:
        return status in (408, 429) or status >= 500
    kind = _http_kind_of(text)
    if kind is not None and kind != "Unknown":
        return kind in _TRANSIENT_HTTP_KINDS
    head = _URL_RE.sub("", text.split("\n\nDebug source")[0])
    return any(m in head for m in _TRANSIENT_MARKERS)


def virtual_hosted_endpoint(endpoint: str, bucket: str) -> str:
    """The endpoint of one bucket under virtual-hosted addressing, the bucket in the host
    name as boto3 and s3fs send it: object_store takes such an endpoint as the bucket's
    own, and would send a bare one's first key segment as the bucket.

    >>> virtual_hosted_endpoint("https://s3.example.org:8443/", "data")
    'https://data.s3.example.org:8443'
    """
    parts = urlsplit(endpoint.rstrip("/"))
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    return parts._replace(netloc=f"{user}{at}{bucket}.{host}").geturl()


class S3ObjectStore(ObjectStore):
    """The objects of one S3 bucket.

    >>> from h5dask.storage.s3_options import S3Settings
    >>> S3ObjectStore("my-bucket", S3Settings(endpoint="http://127.0.0.1:9000"))
    S3ObjectStore('s3://my-bucket')
    """

    bounded_reads_by_range = True
    content_md5_listing = True
    verifies_versions = True  # by ETag (If-Match); a version without one is not checked

    def __init__(self, bucket: str, settings: S3Settings,
                 tuning: StoreTuning = DEFAULT_TUNING["s3"]) -> None:
        super().__init__(tuning)
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.settings = settings
        self.root_url = f"s3://{bucket}"
        self._store = self._make_store()
        self._stream_store = self._make_store(streaming=True)
        #: blocking clients whose requests may take longer than ``timeout`` in all, by
        #: that limit (:meth:`_store_within`)
        self._long_stores: dict[float, S3Store] = {}

    def _init_args(self) -> tuple:
        return (self.bucket, self.settings, self.tuning)

    @property
    def identity(self) -> str:
        """``s3://bucket``, with the endpoint when one is set (a bucket name is unique
        within AWS, not across S3-compatible servers).

        >>> S3ObjectStore("b", S3Settings(endpoint="http://127.0.0.1:9000/")).identity
        's3://b@http://127.0.0.1:9000'
        """
        if not self.settings.endpoint:
            return self.root_url
        return f"{self.root_url}@{self.settings.endpoint.rstrip('/')}"

    @property
    def endpoint(self) -> str:
        """The endpoint URL, or AWS's for the region.

        >>> S3ObjectStore("b", S3Settings(endpoint="http://127.0.0.1:9000/")).endpoint
        'http://127.0.0.1:9000'
        """
        if self.settings.endpoint:
            return self.settings.endpoint.rstrip("/")
        return f"https://s3.{self.settings.region}.amazonaws.com"

    def sibling(self, bucket: str) -> S3ObjectStore:
        """Another bucket of the same endpoint, with the same credentials and tuning.

        >>> from h5dask.storage.s3_options import S3Settings
        >>> S3ObjectStore("a", S3Settings(endpoint="http://127.0.0.1:9000")).sibling("b")
        S3ObjectStore('s3://b')
        """
        if bucket == self.bucket:
            return self
        if not _BUCKET_RE.fullmatch(bucket):
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        return cached_store(S3ObjectStore,  # type: ignore[return-value]
                            (bucket, self.settings, self.tuning))

    def locate(self, url: str) -> tuple[ObjectStore, str] | None:
        """Any bucket of this endpoint: ``s3://bucket/key`` or HSDS's ``bucket/key``."""
        parts = urlsplit(url)
        if parts.scheme in ("s3", "s3a"):
            bucket, key = parts.netloc, parts.path[1:]
        elif not parts.scheme and not url.startswith("/"):
            bucket, _, key = url.partition("/")
        else:
            return None
        return self.sibling(bucket), check_key(key)

    def object_url(self, key: str) -> str | None:
        """``{endpoint}/{bucket}/{key}`` (path style) when the endpoint is known; the key
        is percent-quoted, so a server reads the object the client would ('%', ' ' or '?'
        in a key are characters of the key, not URL syntax).

        >>> from h5dask.storage.s3_options import S3Settings
        >>> S3ObjectStore("b", S3Settings(endpoint="http://127.0.0.1:9000/")).object_url("db/x")
        'http://127.0.0.1:9000/b/db/x'
        """
        if not self.settings.endpoint:
            return None
        return f"{self.settings.endpoint.rstrip('/')}/{self.bucket}/{quote(check_key(key))}"

    def server_credentials(self) -> tuple[str, str] | None:
        s = self.settings
        if s.anon or not s.key or not s.secret:
            return None
        return (s.key, s.secret)

    def _make_store(self, streaming: bool = False, limit: float | None = None) -> S3Store:
        """The obstore client: requests bounded whole by ``timeout`` (HEAD, PUT, LIST,
        GETs of at most :data:`WHOLE_GET_MAX`) or by ``limit``, or, ``streaming``, bounded
        by the caller (:meth:`_streamed`)."""
        s = self.settings
        config: dict[str, Any] = {"region": s.region,
                                  "virtual_hosted_style_request": s.addressing_style == "virtual"}
        if s.endpoint:
            config["endpoint"] = (virtual_hosted_endpoint(s.endpoint, self.bucket)
                                  if s.addressing_style == "virtual" else s.endpoint)
        if s.anon or not s.key:
            config["skip_signature"] = True
        else:
            config["access_key_id"] = s.key
            config["secret_access_key"] = s.secret
            if s.token:
                config["session_token"] = s.token
        if s.requester_pays:
            config["request_payer"] = True
        client: dict[str, Any] = {
            "allow_http": True,
            "timeout": _STREAM_BACKSTOP if streaming else timedelta(
                seconds=self.tuning.timeout if limit is None else limit),
            "connect_timeout": timedelta(seconds=self.tuning.connect_timeout),
            "pool_max_idle_per_host": str(self.max_concurrency),
        }
        if s.ca_bundle:
            with open(s.ca_bundle, "rb") as f:
                client["root_certificate"] = f.read()
        if not s.verify:
            client["allow_invalid_certificates"] = True
        # Retries happen in ObjectStore._call, where they are counted and bounded.
        retry = {"max_retries": 0, "retry_timeout": timedelta(seconds=self.tuning.timeout)}
        return S3Store(self.bucket, config=config, client_options=client, retry_config=retry)

    def _translate(self, exc: Exception, what: str, key: str) -> Exception:
        text = str(exc)
        # obstore appends a debug dump (retry_timeout, body, ...) to every message: judge
        # by the HTTP status when there is one, else by the message's first part only
        head = text.split("\n\nDebug source")[0]
        status = _status_of(text)
        if "<Code>NoSuchBucket</Code>" in text:
            return self._no_bucket()
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or status in (
            401, 403) or (isinstance(exc, GenericError) and any(m in head for m in _AUTH_MARKERS)
        ):
            code = _S3_CODE_RE.search(text)
            return StoragePermissionError(
                f"{what} {self.root_url}/{key} was refused by the object store"
                f"{f' ({code.group(1)})' if code else ''}: "
                f"{_first_line(text) or type(exc).__name__}. {self._refusal_hint(what)}")
        if isinstance(exc, GenericError) and is_transient(text):
            first = text.splitlines()[0] if text else "transient error"
            cause = connection_failure(text)
            return TransientError(f"{first}: {cause}" if cause else first,
                                  timed_out=_http_kind_of(text) == "Timeout")
        if isinstance(exc, GenericError):  # permanent (4xx and the like): no retries
            return StorageError(f"{what} {self.root_url}/{key} failed: {text.splitlines()[0]}",
                                key=key, attempts=1)
        return exc

    def _refusal_hint(self, what: str) -> str:
        """What to do about a refusal, by where the credentials came from."""
        s = self.settings
        if s.anon:
            return ("The bucket does not allow anonymous access (anon=True): give credentials "
                    "(storage_options key/secret, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                    "AWS_PROFILE) instead.")
        if s.credential_source == "none":
            return ("No credentials were found: pass storage_options key/secret, set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or anon=True for "
                    "public data.")
        return (f"Check the access key and secret (credentials from {s.credential_source}, "
                f"key id {masked_key_id(s.key or '')}) and that they are allowed to {what} "
                f"in bucket {self.bucket!r}.")

    def _no_bucket(self) -> BucketNotFoundError:
        where = f" at {self.settings.endpoint}" if self.settings.endpoint else ""
        return BucketNotFoundError(
            f"bucket {self.bucket!r} does not exist{where}: check the bucket name and the "
            "endpoint (--endpoint-url / AWS_ENDPOINT_URL_S3)")

    def _get_failed(self, exc: Exception, key: str, ranged: bool) -> bytes | None:
        """What a failed GET means: None for a missing object, nothing (b"") for a range
        that starts at or past the end (416); anything else is raised, translated."""
        if isinstance(exc, NotFoundError | FileNotFoundError):
            if "<Code>NoSuchBucket</Code>" in str(exc):
                raise self._no_bucket() from exc
            return None
        if ranged and isinstance(exc, GenericError) and _status_of(str(exc)) == 416:
            return b""
        if isinstance(exc, TransientError | TimeoutError | ConnectionError | StorageError):
            raise exc  # (StorageError: ours, as it is)
        raise self._translate(exc, "GET", key) from exc

    # obstore's buffers are handed on as read-only memoryviews, not copied into bytes
    # (ObjectStore.get copies for callers that need bytes; chunk reads do not). A range
    # past the end returns what there is, as file and fsspec stores do (a dropped response
    # raises instead: the client checks Content-Length).
    async def _get(self, key: str, byte_range: tuple[int, int] | None
                   ) -> bytes | memoryview | None:
        try:
            if byte_range is None:
                return await self._get_whole(key)
            start, stop = byte_range
            if stop == start:
                return b""
            return await self._get_range(key, start, stop)
        except Exception as exc:
            return self._get_failed(exc, key, byte_range is not None)

    async def _get_range(self, key: str, start: int, stop: int, if_match: str | None = None
                         ) -> bytes | memoryview:
        """Bytes [start, stop): one request within ``timeout`` when short, else
        :meth:`_streamed`; ``if_match``: only of the object with that ETag (else
        :class:`_Overwritten`)."""
        if stop - start > WHOLE_GET_MAX:
            return await self._streamed(key, (start, stop), if_match)
        if if_match is None:
            return memoryview(await obstore.get_range_async(self._store, key, start=start,
                                                            end=stop))
        result = await obstore.get_async(self._store, key,
                                         options={"range": (start, stop), "if_match": if_match})
        try:
            _pinned(result.meta, if_match)
            return memoryview(await result.bytes_async())
        finally:
            del result

    async def _answer(self, key: str, options: dict[str, Any]) -> Any:
        """The answer (status, headers) of a GET on the streaming client, within
        ``timeout``; its body is read by :meth:`_body`."""
        timeout = self.tuning.timeout
        try:
            async with asyncio.timeout(timeout):
                return await obstore.get_async(self._stream_store, key, options=options)
        except TimeoutError as exc:
            raise TransientError(f"GET: no answer in time ({timeout:g} s): check that the "
                                 "endpoint is an S3 server and healthy", timed_out=True) from exc

    async def _body(self, result: Any) -> memoryview:
        """The whole body of an answer of :meth:`_answer`, in one piece (no copy), within
        :func:`~.settings.body_limit` of its length: a slow but steady body completes, a
        stalled one is a retried TransientError naming it as stalled."""
        start, stop = result.range
        expected = stop - start
        limit = body_limit(self.tuning.timeout, expected)
        try:
            async with asyncio.timeout(limit):
                data = memoryview(await result.bytes_async())
        except TimeoutError as exc:
            # the raised error's traceback keeps this frame: let the connection go now
            del result
            raise TransientError(f"GET: the body stalled: not all of its {expected} bytes "
                                 f"in {limit:.3g} s", stalled=True) from exc
        if len(data) != expected:
            raise TransientError(f"short read: {len(data)} of {expected} bytes")
        return data

    async def _streamed(self, key: str, byte_range: tuple[int, int],
                        if_match: str | None = None) -> memoryview:
        """A ranged GET whose answer must come within ``timeout`` and whose body within
        :func:`~.settings.body_limit` of its length (:meth:`_body`)."""
        options: dict[str, Any] = {"range": byte_range}
        if if_match is not None:
            options["if_match"] = if_match
        result = await self._answer(key, options)
        try:
            if if_match is not None:
                _pinned(result.meta, if_match)
            return await self._body(result)
        finally:
            del result  # (as in _body: not kept by a raised error's traceback)

    def _store_within(self, length: int) -> tuple[float, S3Store]:
        """A blocking client whose requests may take :func:`~.settings.body_limit` of
        ``length`` in all (answer included: a blocking call cannot bound its waits one by
        one), rounded up to ``timeout`` x a power of two so that a few clients serve all
        lengths (each client keeps its own connections)."""
        timeout = self.tuning.timeout
        steps = 2 ** math.ceil(math.log2(1 + length / BODY_PIECE))
        limit = min(timeout * steps, max(timeout, BODY_LIMIT_CAP))
        store = self._long_stores.get(limit)
        if store is None:
            store = self._long_stores.setdefault(limit, self._make_store(limit=limit))
        return limit, store

    def _long_get_sync(self, key: str, length: int, options: dict[str, Any],
                       check: Any = None) -> memoryview:
        """A blocking GET of ``length`` (> :data:`WHOLE_GET_MAX`) bytes through
        :meth:`_store_within`; ``check``: called with the answer's meta first."""
        limit, store = self._store_within(length)
        try:
            result = obstore.get(store, key, options=options)
            try:
                if check is not None:
                    check(result.meta)
                return _checked_body(result)
            finally:
                del result  # not kept by a raised error's traceback: the connection goes
        except GenericError as exc:
            _raise_long_timed_out(exc, length, limit)
            raise

    def _get_sync(self, key: str, byte_range: tuple[int, int] | None
                  ) -> bytes | memoryview | None:
        """The blocking twin of :meth:`_get` (obstore releases the GIL while it waits)."""
        if byte_range is None:
            # size unknown before the answer (and maybe a multipart read): on the I/O loop,
            # where the answer and the body are bounded each by its own limit
            return sync(self._get(key, byte_range))
        try:
            start, stop = byte_range
            if stop == start:
                return b""
            if stop - start <= WHOLE_GET_MAX:
                return memoryview(obstore.get_range(self._store, key, start=start, end=stop))
            # one call, the body in one piece, on a client whose limit is scaled
            limit, store = self._store_within(stop - start)
            try:
                return memoryview(obstore.get_range(store, key, start=start, end=stop))
            except GenericError as exc:
                _raise_long_timed_out(exc, stop - start, limit)
                raise
        except Exception as exc:
            return self._get_failed(exc, key, byte_range is not None)

    # A read of a given version sends If-Match with its ETag: the server answers 412 if
    # the object was written since (SeaweedFS does, ranged GETs included); the answer's
    # own ETag is compared too, for a server that ignores If-Match. One request, as a
    # plain ranged GET (obstore's get with options: one more hand-off for the body).
    def _version_options(self, byte_range: tuple[int, int], version: ObjectVersion
                         ) -> dict | None:
        etag = etag_of(version)
        return None if etag is None else {"range": byte_range, "if_match": etag}

    def _same_etag(self, key: str, version: ObjectVersion, meta: Any) -> None:
        got = (meta.get("e_tag") or "").strip('"')
        want = (etag_of(version) or "").strip('"')
        if got and got != want:
            raise changed_since(self, key, version, f"its ETag is {got} now")

    def _version_failed(self, exc: Exception, key: str, version: ObjectVersion
                        ) -> bytes | None:
        if isinstance(exc, PreconditionError) or _status_of(str(exc)) == 412:
            raise changed_since(self, key, version, "the server answered 412 Precondition "
                                "Failed to If-Match with its ETag") from exc
        if isinstance(exc, StorageError):  # ours (changed_since): as it is
            raise exc
        return self._get_failed(exc, key, ranged=True)

    async def _get_version(self, key: str, byte_range: tuple[int, int],
                           version: ObjectVersion) -> bytes | memoryview | None:
        options = self._version_options(byte_range, version)
        if options is None or byte_range[0] == byte_range[1]:
            return await self._get(key, byte_range)
        try:
            if byte_range[1] - byte_range[0] > WHOLE_GET_MAX:  # as _streamed, with If-Match
                result = await self._answer(key, options)
                try:
                    self._same_etag(key, version, result.meta)
                    return await self._body(result)
                finally:
                    del result
            result = await obstore.get_async(self._store, key, options=options)
            self._same_etag(key, version, result.meta)
            return memoryview(await result.bytes_async())
        except Exception as exc:
            return self._version_failed(exc, key, version)

    def _get_version_sync(self, key: str, byte_range: tuple[int, int],
                          version: ObjectVersion) -> bytes | memoryview | None:
        """The blocking twin of :meth:`_get_version`."""
        options = self._version_options(byte_range, version)
        if options is None or byte_range[0] == byte_range[1]:
            return self._get_sync(key, byte_range)
        try:
            length = byte_range[1] - byte_range[0]
            if length > WHOLE_GET_MAX:
                return self._long_get_sync(
                    key, length, options, lambda meta: self._same_etag(key, version, meta))
            result = obstore.get(self._store, key, options=options)
            self._same_etag(key, version, result.meta)
            return memoryview(result.bytes())
        except Exception as exc:
            return self._version_failed(exc, key, version)

    def _blocking_get_version(self) -> Any:
        return (self._get_version_sync
                if type(self)._get_version is S3ObjectStore._get_version else None)

    def _blocking_get(self) -> Any:
        # only where GETs are this class's own (a subclass may change how they are made)
        return self._get_sync if type(self)._get is S3ObjectStore._get else None

    async def _get_whole(self, key: str) -> bytes | memoryview:
        # One GET for objects up to the threshold; beyond it, the first response tells
        # the size and the ETag, and the rest arrives as concurrent ranged GETs of that
        # ETag only (If-Match): an object overwritten meanwhile is read again, whole,
        # never returned as a mix of two versions.
        for attempt in (1, 2):
            result = await self._answer(key, {})
            try:
                size = result.meta["size"]
                if size <= self.tuning.multipart_threshold:
                    return await self._body(result)
                etag = result.meta.get("e_tag")
            finally:
                del result  # (a larger object's body is fetched in parts instead)
            try:
                return await self._get_parts(key, size, etag)
            except _Overwritten:
                if attempt == 2:
                    raise StorageError(
                        f"GET of {self.root_url}/{key} failed: the object was overwritten "
                        "while it was read in parts, twice (its parts would mix two "
                        "versions); read it again when it is no longer being written",
                        key=key, attempts=2) from None
        raise AssertionError("unreachable")

    async def _get_parts(self, key: str, size: int, etag: str | None) -> bytes:
        starts = list(range(0, size, self.tuning.part_size))
        ends = [min(s + self.tuning.part_size, size) for s in starts]
        try:
            parts = await asyncio.gather(*(self._get_range(key, s, e, etag)
                                           for s, e in zip(starts, ends)))
        except Exception as exc:
            if isinstance(exc, PreconditionError) or _status_of(str(exc)) == 412:
                raise _Overwritten() from exc
            raise
        data = b"".join(parts)
        if len(data) != size:
            raise TransientError(f"short multipart read: {len(data)} of {size} bytes")
        return data

    async def _stat(self, key: str) -> ObjectVersion | None:
        try:
            meta = await obstore.head_async(self._store, key)
        except Exception as exc:
            self._get_failed(exc, key, ranged=False)  # raises unless the object is missing
            return None
        # every PUT gives the object a new ETag unless its bytes are the same (an MD5)
        etag = meta.get("e_tag")
        modified = meta.get("last_modified")
        tag = (f"etag={etag.strip(chr(34))}" if etag else
               f"modified={modified.isoformat()}" if modified is not None else None)
        return ObjectVersion(int(meta["size"]), tag,
                             None if modified is None else modified.timestamp())

    async def _put(self, key: str, data: bytes) -> None:
        try:
            await obstore.put_async(self._store, key, data)
        except Exception as exc:
            raise self._translate(exc, "PUT", key) from exc

    atomic_create = True  # If-None-Match: * (AWS since 2024, SeaweedFS, MinIO)

    async def _put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            await obstore.put_async(self._store, key, data, mode="create")
        except AlreadyExistsError:  # 412 Precondition Failed
            return False
        except Exception as exc:
            raise self._translate(exc, "PUT", key) from exc
        return True

    atomic_replace = True  # If-Match: <ETag> (AWS since 2024, SeaweedFS, MinIO)

    async def _put_if_version(self, key: str, data: bytes, version: ObjectVersion) -> bool:
        etag = etag_of(version)
        if etag is None:  # a store that gives no ETags: look, then write
            return await super()._put_if_version(key, data, version)
        try:
            await obstore.put_async(self._store, key, data,
                                    mode={"e_tag": etag})
        except (PreconditionError, NotFoundError, FileNotFoundError):  # 412, or gone
            return False
        except Exception as exc:
            raise self._translate(exc, "PUT", key) from exc
        return True

    async def _delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as exc:
            raise self._translate(exc, "DELETE", key) from exc

    async def _listing(self, prefix: str) -> list[dict]:
        """Every object's listing entry under ``prefix`` (all pages)."""
        try:
            found: list[dict] = []
            stream = obstore.list(self._store, prefix=prefix or None, chunk_size=1000)
            async for batch in stream:
                found.extend(batch)
            return found
        except Exception as exc:
            raise self._translate(exc, "LIST", prefix) from exc

    async def _list(self, prefix: str) -> list[str]:
        return [meta["path"] for meta in await self._listing(prefix)]

    async def iter_list(self, prefix: str = "", *, page_size: int = 1000
                        ) -> AsyncIterator[list[str]]:
        # one LIST request per page (S3 start-after the previous page's last key), each
        # retried on its own: only one page is ever held, and a page that failed is asked
        # again, not the listing from its start
        check_prefix(prefix)
        after: str | None = None
        while True:
            page = await self._call("LIST", prefix, "other",
                                    lambda after=after: self._list_page(prefix, after,
                                                                        page_size))
            record_io("other", "list_requests")
            if not page:  # (a short page is not the end: S3 may return fewer keys)
                return
            yield page
            after = page[-1]

    async def _list_page(self, prefix: str, after: str | None, page_size: int) -> list[str]:
        try:
            stream = obstore.list(self._store, prefix=prefix or None, offset=after,
                                  chunk_size=page_size)
            batch = await anext(stream, [])  # the first page only
        except Exception as exc:
            raise self._translate(exc, "LIST", prefix) from exc
        return sorted(meta["path"] for meta in batch)


    async def _list_md5(self, prefix: str, limit: int) -> dict[str, str]:
        try:
            stream = obstore.list(self._store, prefix=prefix, chunk_size=limit)
            batch = await anext(stream, [])  # the first page only: one request
        except Exception as exc:
            raise self._translate(exc, "LIST", prefix) from exc
        return {meta["path"]: md5 for meta in batch if (md5 := _content_md5(meta))}

    async def _list_with_md5(self, prefix: str) -> dict[str, str | None]:
        if not self.content_md5_listing:  # its ETags were found not to be MD5s
            return await super()._list_with_md5(prefix)
        return {meta["path"]: _content_md5(meta) for meta in await self._listing(prefix)}

    async def _list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        try:
            found = await obstore.list_with_delimiter_async(self._store, prefix=prefix or None)
        except Exception as exc:
            raise self._translate(exc, "LIST", prefix) from exc
        return ([meta["path"] for meta in found["objects"]],
                [p.rstrip("/") + "/" for p in found["common_prefixes"]])

    async def _list_modified(self, prefix: str) -> dict[str, float]:
        try:
            found: dict[str, float] = {}
            stream = obstore.list(self._store, prefix=prefix or None, chunk_size=1000)
            async for batch in stream:
                found.update((m["path"], m["last_modified"].timestamp()) for m in batch)
            return found
        except Exception as exc:
            raise self._translate(exc, "LIST", prefix) from exc


def _pinned(meta: Any, etag: str) -> None:
    """Raise :class:`_Overwritten` if an answer to If-Match ``etag`` has another ETag (a
    server that ignores If-Match)."""
    got = (meta.get("e_tag") or "").strip('"')
    if got and got != etag.strip('"'):
        raise _Overwritten()


def _raise_long_timed_out(exc: Exception, length: int, limit: float) -> None:
    """Raise a blocking GET of ``length`` bytes that did not end within ``limit`` as a
    retried error naming the body as maybe stalled; return for other errors."""
    if _http_kind_of(str(exc)) == "Timeout":
        raise TransientError(f"GET: no answer, or the body stalled: not all of its {length} "
                             f"bytes in {limit:.3g} s", stalled=True) from exc


def _checked_body(result: Any) -> memoryview:
    """The body of a blocking GET's answer, checked against the length it announced."""
    start, stop = result.range
    data = memoryview(result.bytes())
    if len(data) != stop - start:
        raise TransientError(f"short read: {len(data)} of {stop - start} bytes")
    return data


def _content_md5(meta: Any) -> str | None:
    """A listed object's ETag if it is shaped like the MD5 of its bytes, else None."""
    etag = (meta.get("e_tag") or "").strip('"').lower()
    return etag if _MD5_RE.fullmatch(etag) else None  # not "<md5>-<parts>", "W/..."
