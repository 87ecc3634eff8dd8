"""Fetching the requested byte range of an upstream object, safely.

* :class:`AllowList`: only ``scheme://host:port`` origins given by the operator
  may be fetched from (exact comparison of parsed scheme, host and port; user
  info in a URL is refused), anything else is a 403.
* ``interface_type`` ``s3``: the URL is ``endpoint/bucket/key`` (path style). An
  obstore ``S3Store`` per endpoint, bucket and credentials (HTTP Basic user and
  password = access key and secret) presigns the GET; no ``Authorization`` header
  means anonymous access (an unsigned request).
* ``http`` / ``https``: a plain GET of the URL, forwarding HTTP Basic credentials.
* Both go through one aiohttp session, shared by all users and so keeping no state
  of theirs (no cookie jar, no session-wide auth, no .netrc; S3 stores are cached
  by their keys), with a ``Range`` header, redirects NOT
  followed (obstore's own client follows them, which would escape the allow-list;
  that is why obstore signs and aiohttp transfers), no transparent decompression,
  no proxy from the environment, and the body read is capped at the configured
  maximum object size (400, Reductionist's "Insufficient memory", beyond it).
* Upstream failures get Reductionist's statuses (its ``src/error.rs``), with our
  detail (the URL, the S3 error code) in the message and ``caused_by``:

  - ``s3``: a missing object or bucket (NoSuchKey, NoSuchBucket) -> 400; credentials
    refused or access denied (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied,
    any 401/403) -> 401; any other S3 error (5xx, InvalidRange, a redirect), a
    connection error or a timeout -> 500. Messages start with Reductionist's "error
    retrieving object from S3 storage".
  - ``http``/``https``: any answer but 200/206 (404, 401, 5xx, a redirect), a
    connection error or a timeout -> 400 ("HTTP request error", as Reductionist's
    reqwest client: every upstream status and request error is a 400 there).

Example::

    >>> AllowList(["http://127.0.0.1:9000"]).check("http://127.0.0.1:9000/bucket/key")
    >>> parse_s3_url("http://127.0.0.1:9000/bucket/a/b%20c.nc")
    ('http://127.0.0.1:9000', 'bucket', 'a/b c.nc')
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp
import obstore
import yarl
from obstore.store import S3Store

from h5dask.active.errors import ActiveStorageError, FieldError, redact_url, too_large
from h5dask.active.memory import BufferPool
from h5dask.active.request import ReductionRequest
from h5dask.storage.s3_options import masked_key_id

__all__ = ["AllowList", "Credentials", "Origin", "Routes", "Upstream", "parse_s3_url",
           "upstream_error"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_S3_AUTH_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                  "InvalidToken", "ExpiredToken")
_READ_CHUNK = 1 << 20
_READ_BUFFER = 256 << 10
_PRESIGN_TTL = timedelta(minutes=10)


# -- allow-list -----------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """A parsed ``scheme://host:port`` (port filled in from the scheme when omitted)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _origin(url: str) -> tuple[Origin, Any]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port  # may raise ValueError
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {redact_url(url)!r}")
    return Origin(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]), parts


class AllowList:
    """The upstream origins the server may fetch from.

    Example::

        >>> allow = AllowList(["http://127.0.0.1:9000", "https://s3.example.org"])
        >>> allow.allows("https://s3.example.org:443/b/k"), allow.allows("http://127.0.0.1:9001/b")
        (True, False)
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.origins: frozenset[Origin] = frozenset(self.parse_entry(e) for e in entries)

    @staticmethod
    def parse_entry(entry: str, option: str = "--allow-upstream") -> Origin:
        """Parse one ``scheme://host[:port]`` entry (of ``option``); ValueError for
        anything else."""
        try:
            origin, parts = _origin(entry.strip())
        except ValueError as exc:
            raise ValueError(f"bad {option} entry {entry!r}: {exc}") from None
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"bad {option} entry {entry!r}: user info not allowed")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"bad {option} entry {entry!r}: give scheme://host:port only")
        return origin

    def allows(self, url: str) -> bool:
        """True when ``url`` may be fetched (see :meth:`check`)."""
        try:
            self.check(url)
        except ActiveStorageError:
            return False
        return True

    def check(self, url: str) -> None:
        """Raise a 403 :class:`ActiveStorageError` unless ``url``'s origin is allowed."""
        try:
            origin, parts = _origin(url)
        except ValueError as exc:
            raise FieldError("url", str(exc)) from None
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise FieldError("url", "user info in the URL is not allowed", status=403)
        if origin not in self.origins:
            raise FieldError(
                "url", f"upstream {origin} is not on the server's allow-list", status=403
            )

    def __repr__(self) -> str:
        return f"AllowList({sorted(str(o) for o in self.origins)})"


class Routes:
    """Where the server fetches an origin that clients name differently.

    Active storage runs next to the object store, and may reach it at another address
    than its clients do (an internal endpoint, or a benchmark's latency proxy in front
    of the store). A route ``NAMED=FETCHED`` makes requests whose URL has the origin
    ``NAMED`` fetch the same path from ``FETCHED`` instead. The operator sets routes,
    never a client, and ``FETCHED`` must be on the allow-list, which is checked on the
    URL actually fetched: a route adds no origin the server may read.

    Example::

        >>> allow = AllowList(["http://10.0.0.5:9000"])
        >>> routes = Routes(["https://s3.example.org=http://10.0.0.5:9000"], allow)
        >>> routes.apply("https://s3.example.org/bucket/key")
        'http://10.0.0.5:9000/bucket/key'
        >>> routes.apply("http://other:1/bucket/key")
        'http://other:1/bucket/key'
    """

    def __init__(self, entries: Iterable[str], allow: AllowList) -> None:
        self.routes: dict[Origin, Origin] = {}
        for entry in entries:
            named, sep, fetched = entry.partition("=")
            if not sep:
                raise ValueError(f"bad --upstream-route entry {entry!r}: give NAMED=FETCHED, "
                                 "two scheme://host:port origins")
            option = "--upstream-route"
            source = AllowList.parse_entry(named, option)
            target = AllowList.parse_entry(fetched, option)
            if target not in allow.origins:
                raise ValueError(f"bad --upstream-route entry {entry!r}: {target} is not on "
                                 "the allow-list (add it with --allow-upstream)")
            self.routes[source] = target

    def apply(self, url: str) -> str:
        """``url`` with its origin replaced when a route names it, else ``url`` itself
        (also when it cannot be parsed, or has user info: the allow-list refuses it)."""
        if not self.routes:
            return url
        try:
            origin, parts = _origin(url)
        except ValueError:
            return url
        target = self.routes.get(origin)
        if target is None or "@" in parts.netloc:
            return url
        return urlunsplit((target.scheme, str(target).split("://", 1)[1], parts.path,
                           parts.query, parts.fragment))

    @staticmethod
    def named_back(err: ActiveStorageError, fetched: str, named: str) -> ActiveStorageError:
        """``err`` (about fetching ``fetched``) saying ``named``'s origin instead, as the
        client sent it; the address a route fetches from is the operator's business.

        Example::

            >>> err = ActiveStorageError(404, "object not found: http://10.0.0.5:9000/b/k")
            >>> Routes.named_back(err, "http://10.0.0.5:9000/b/k", "https://s3.example.org/b/k"
            ...                   ).message
            'object not found: https://s3.example.org/b/k'
        """
        if fetched == named:
            return err
        f, n = urlsplit(fetched), urlsplit(named)
        was, now = f"{f.scheme}://{f.netloc}", f"{n.scheme}://{n.netloc}"
        err.message = err.message.replace(was, now)
        err.caused_by = [c.replace(was, now) for c in err.caused_by]
        return err

    def __repr__(self) -> str:
        return f"Routes({ {str(k): str(v) for k, v in self.routes.items()} })"


# -- credentials ----------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """S3 access key and secret from an HTTP Basic ``Authorization`` header."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def __repr__(self) -> str:  # the key id masked, as in h5dask's S3 refusals
        return f"Credentials(access_key={masked_key_id(self.access_key)!r})"

    @classmethod
    def from_authorization(cls, header: str | None) -> Credentials | None:
        """Parse ``Authorization: Basic ...``; None when absent or of another scheme
        (anonymous, as Reductionist: its optional Basic header ignores a Bearer token
        meant for a proxy in front of it); 400 when Basic but malformed (Reductionist
        would go anonymous there too; a client that meant to send S3 keys is told).

        Example::

            >>> Credentials.from_authorization("Basic dXNlcjpwYXNz")
            Credentials(access_key='****')
            >>> Credentials.from_authorization("Bearer abc") is None
            True
        """
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ActiveStorageError(
                400, "invalid Authorization header: malformed Basic credentials"
            ) from None
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise ActiveStorageError(400, "invalid Authorization header: expected user:password")
        return cls(user, password)


class _StaticCredentials:
    """An obstore credential provider returning fixed keys and no session token."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def __call__(self) -> dict[str, Any]:
        return {
            "access_key_id": self._credentials.access_key,
            "secret_access_key": self._credentials.secret_key,
            "token": None,
            "expires_at": None,
        }

    def __repr__(self) -> str:
        return f"_StaticCredentials({self._credentials!r})"


# -- URLs -----------------------------------------------------------------------------


def parse_s3_url(url: str) -> tuple[str, str, str]:
    """Split a path-style S3 URL into (endpoint, bucket, key), percent-decoded.

    Example::

        >>> parse_s3_url("https://s3.example.org/bucket/dir/key")
        ('https://s3.example.org', 'bucket', 'dir/key')
    """
    origin, parts = _origin(url)
    if parts.query or parts.fragment:
        raise FieldError("url", "an s3 URL must not have a query or fragment")
    bucket, _, key = parts.path.lstrip("/").partition("/")
    bucket, key = unquote(bucket), unquote(key)
    if not bucket:
        raise FieldError("url", "an s3 URL must name a bucket: endpoint/bucket/key")
    if not key:
        raise FieldError("url", "an s3 URL must name an object: endpoint/bucket/key")
    endpoint = f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2]}"
    return endpoint, bucket, key


def _yarl(url: str) -> yarl.URL:
    """The URL to request, sent exactly as given when it is plain ASCII."""
    return yarl.URL(url, encoded=url.isascii())


def _check_content_range(resp: aiohttp.ClientResponse, req: ReductionRequest,
                         shown: str) -> None:
    """A 206 must start where we asked (an upstream error otherwise)."""
    if resp.status != 206:
        return
    m = re.match(r"\s*bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    if m is None or int(m.group(1)) != req.offset:
        raise upstream_error(req, f"upstream sent the wrong byte range for {shown}",
                             [f"expected offset {req.offset}"])


#: Reductionist's messages for a failed fetch (its S3GetObject and HTTPRequestError)
S3_ERROR = "error retrieving object from S3 storage"
HTTP_ERROR = "HTTP request error"


def upstream_error(req: ReductionRequest, detail: str, caused_by: list[str]
                   ) -> ActiveStorageError:
    """A failed fetch as Reductionist answers it: 500 for ``s3`` (an unhandled S3 error,
    a connection error, a timeout), 400 for ``http``/``https`` (reqwest's request
    errors and every upstream status are 400s there); our detail after its message.

    Example::

        >>> req = ReductionRequest("http", "http://h:1/x", "int32")
        >>> err = upstream_error(req, "upstream error 503 for http://h:1/x", ["503"])
        >>> err.status, err.message
        (400, 'HTTP request error: upstream error 503 for http://h:1/x')
    """
    if req.interface_type == "s3":
        return ActiveStorageError(500, f"{S3_ERROR}: {detail}", caused_by)
    return ActiveStorageError(400, f"{HTTP_ERROR}: {detail}", caused_by)


def _s3_code(body: bytes) -> str:
    m = re.search(rb"<Code>([A-Za-z]+)</Code>", body)
    return m.group(1).decode() if m else ""


# -- fetching -------------------------------------------------------------------------


async def _read_into(resp: aiohttp.ClientResponse, view: memoryview, skip: int) -> int:
    """Copy the body, after ``skip`` bytes, into ``view`` until it is full or the body
    ends; the number of bytes written. Each piece is copied once, as received (no
    joining into larger pieces first)."""
    filled = 0
    async for piece, _ in resp.content.iter_chunks():
        chunk = memoryview(piece)
        if skip:
            dropped = min(skip, len(chunk))
            chunk, skip = chunk[dropped:], skip - dropped
        n = min(len(chunk), len(view) - filled)
        view[filled : filled + n] = chunk[:n]
        filled += n
        if filled >= len(view):
            break
    return filled


class Upstream:
    """Fetches object byte ranges; one per server (owns an aiohttp session).

    Example::

        upstream = Upstream(max_object_size=64 << 20)
        await upstream.start()
        data = await upstream.fetch(request, credentials=None)
        await upstream.close()
    """

    def __init__(
        self,
        max_object_size: int,
        timeout: float = 60.0,
        store_cache_size: int = 64,
        max_connections: int = 64,
        pool: BufferPool | None = None,
    ) -> None:
        self.max_object_size = max_object_size
        self.timeout = timeout
        self.store_cache_size = store_cache_size
        self.max_connections = max_connections
        #: where object buffers come from (reused); give them back with ``pool.give``
        self.pool = pool
        self._stores: OrderedDict[tuple[str, str, str, str], S3Store] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session (call from the event loop that will use it)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                # the session serves every user: a cookie an upstream set after one
                # user's credentials would be sent with the next user's requests
                # (anonymous ones too), and read that user's objects for them
                cookie_jar=aiohttp.DummyCookieJar(),
                # no proxy from the environment, and no ~/.netrc credentials either
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(10.0, self.timeout)),
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                # aiohttp stops reading a socket once this much is buffered (64 KiB by
                # default); the body is copied out at once, but on a busy machine the
                # pauses cost a sixth of the throughput (measured through the latency
                # proxy)
                read_bufsize=_READ_BUFFER,
            )

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def store(self, endpoint: str, bucket: str, credentials: Credentials) -> S3Store:
        """The cached S3Store for ``endpoint``/``bucket`` and these credentials."""
        key = (endpoint, bucket, credentials.access_key, credentials.secret_key)
        store = self._stores.get(key)
        if store is None:
            # A credential provider (not key kwargs) keeps AWS_* variables of the server's
            # environment, such as a session token, out of the signature.
            store = S3Store(
                bucket,
                endpoint=endpoint,
                region="us-east-1",
                credential_provider=_StaticCredentials(credentials),
                skip_signature=False,
                virtual_hosted_style_request=False,
                client_options={"allow_http": True},
            )
            self._stores[key] = store
            while len(self._stores) > self.store_cache_size:
                self._stores.popitem(last=False)
        else:
            self._stores.move_to_end(key)
        return store

    async def object_url(self, req: ReductionRequest, credentials: Credentials | None) -> str:
        """The URL to GET for ``req``: presigned for s3 with credentials, else plain."""
        if req.interface_type != "s3":
            return req.url.partition("#")[0]
        endpoint, bucket, key = parse_s3_url(req.url)
        if credentials is None:
            return f"{endpoint}/{quote(bucket, safe='')}/{quote(key, safe='/')}"
        try:
            return await obstore.sign_async(
                self.store(endpoint, bucket, credentials), "GET", key, _PRESIGN_TTL
            )
        except Exception as exc:  # obstore rejects some keys (empty segments, ...)
            raise FieldError("url", f"cannot address this object: {str(exc)[:200]}") from None

    async def fetch(
        self, req: ReductionRequest, credentials: Credentials | None
    ) -> bytearray | memoryview:
        """Fetch ``req.size`` bytes at ``req.offset`` (or to the end) of ``req.url``.

        The bytes come in one writable buffer of their own (never copied after the read);
        with a :class:`~h5dask.active.memory.BufferPool`, a memoryview of a buffer of
        the pool (``.obj``), to be given back to it when done with.
        """
        limit = self.max_object_size
        if req.size is not None and req.size > limit:
            raise too_large(
                "object", f"requested size {req.size} is more than the limit of {limit} bytes")
        url = await self.object_url(req, credentials)
        headers = {}
        if req.interface_type != "s3" and credentials is not None:
            headers["Authorization"] = aiohttp.BasicAuth(
                credentials.access_key, credentials.secret_key
            ).encode()
        ranged = req.size is not None or req.offset > 0
        if req.size is not None:
            headers["Range"] = f"bytes={req.offset}-{req.offset + req.size - 1}"
        elif req.offset > 0:
            headers["Range"] = f"bytes={req.offset}-"
        if self._session is None:
            await self.start()
        assert self._session is not None
        shown = redact_url(req.url)
        try:
            async with self._session.get(
                _yarl(url), headers=headers, allow_redirects=False
            ) as resp:
                await self._check_status(resp, shown, req)
                if resp.status == 200 and ranged:
                    # The upstream ignored Range: skip to the offset ourselves.
                    data = await self._read(resp, skip=req.offset, want=req.size, shown=shown)
                else:
                    _check_content_range(resp, req, shown)
                    data = await self._read(resp, skip=0, want=req.size, shown=shown)
        except ActiveStorageError:
            raise
        except TimeoutError:
            raise upstream_error(
                req, f"timed out fetching {shown}", ["timed out"]
            ) from None
        except aiohttp.ClientError as exc:
            raise upstream_error(
                req, f"error fetching {shown}", [type(exc).__name__]
            ) from None
        if req.size is not None and len(data) != req.size:
            raise FieldError(
                "size",
                f"the object has only {len(data)} bytes at offset {req.offset}, "
                f"not the {req.size} requested",
            )
        return data

    async def _check_status(
        self, resp: aiohttp.ClientResponse, shown: str, req: ReductionRequest
    ) -> None:
        status = resp.status
        if status in (200, 206):
            return
        body = await resp.content.read(16384)
        code = _s3_code(body)
        if 300 <= status < 400:
            location = redact_url(resp.headers.get("Location", ""))
            raise upstream_error(
                req,
                "upstream answered with a redirect, which is not followed",
                [f"{status} to {location or '(no Location)'}"],
            )
        if req.interface_type != "s3":
            # Reductionist: any other status of an http(s) upstream is HTTPRequestError
            raise upstream_error(req, f"HTTP request failed with status {status} for {shown}",
                                 [str(status)])
        if status == 404 or code in ("NoSuchKey", "NoSuchBucket"):
            # Reductionist: NoSuchKey and NoSuchBucket are 400s
            raise ActiveStorageError(
                400, f"{S3_ERROR}: object not found: {shown}", [code or f"{status} Not Found"]
            )
        if status in (401, 403) or code in _S3_AUTH_CODES:
            # Reductionist: InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied -> 401
            raise ActiveStorageError(
                401, f"{S3_ERROR}: upstream rejected the credentials or denied access to "
                f"{shown}", [code or str(status)]
            )
        if status == 416:
            raise upstream_error(
                req, f"offset {req.offset} is beyond the end of {shown}",
                [code or "416 Range Not Satisfiable"])
        raise upstream_error(req, f"upstream error {status} for {shown}",
                             [code] if code else [str(status)])

    async def _read(
        self, resp: aiohttp.ClientResponse, skip: int, want: int | None, shown: str
    ) -> bytearray | memoryview:
        """The body (after ``skip`` bytes), read into one buffer allocated up front when
        the size is known: peak memory is the object's size, not a multiple of it."""
        limit = self.max_object_size
        length = resp.content_length
        if want is None and length is not None and length - skip > limit:
            raise too_large(
                "object", f"{shown} has {length - skip} bytes, more than the limit of {limit}")
        if want is None and length is not None:
            want_now = max(length - skip, 0)
        else:
            want_now = want
        if want_now is None:  # no Content-Length: grow, up to one byte past the limit
            return await self._read_growing(resp, skip, limit, shown)
        if self.pool is None:
            buf = bytearray(want_now)
            filled = await _read_into(resp, memoryview(buf), skip)
            return memoryview(buf)[:filled] if filled < want_now else buf
        # waits while the pool's buffers are all in use; the upstream's answer stays in
        # its socket meanwhile, and the connection's first-byte wait is already over
        pooled = await self.pool.take_when_free(want_now)
        try:
            filled = await _read_into(resp, memoryview(pooled), skip)
        except BaseException:
            self.pool.give(pooled)
            raise
        # a reused buffer may hold older bytes past ``filled``: only the filled part
        return memoryview(pooled)[:filled]

    async def _read_growing(
        self, resp: aiohttp.ClientResponse, skip: int, limit: int, shown: str
    ) -> bytearray:
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            buf += chunk
            if len(buf) > limit:
                raise too_large("object", f"{shown} is larger than {limit} bytes")
        return buf
