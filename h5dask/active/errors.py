"""The error the active-storage server answers with, as Reductionist's JSON error body.

Example::

    >>> err = ActiveStorageError(400, "request data is not valid", ["dtype: unknown"])
    >>> err.body()
    {'error': {'message': 'request data is not valid', 'caused_by': ['dtype: unknown']}}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ActiveStorageError", "FieldError", "printable", "redact_url", "too_large"]


class ActiveStorageError(Exception):
    """An error with an HTTP status and the JSON body ``{"error": {message, caused_by}}``."""

    def __init__(self, status: int, message: str, caused_by: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.caused_by = [str(c) for c in caused_by]

    def body(self) -> dict[str, Any]:
        """The JSON-able error body; ``caused_by`` is left out when empty (as Reductionist)."""
        err: dict[str, Any] = {"message": self.message}
        if self.caused_by:
            err["caused_by"] = self.caused_by
        return {"error": err}


class FieldError(ActiveStorageError):
    """A request field that is missing, unknown or invalid (400 unless told; names the field).

    Example::

        >>> FieldError("shape", "must not be empty").message
        "request data is not valid: field 'shape': must not be empty"
    """

    def __init__(self, field: str, detail: str, status: int = 400) -> None:
        what = "request data is not valid" if status == 400 else "request refused"
        super().__init__(status, f"{what}: field '{field}': {detail}", [f"{field}: {detail}"])
        self.field = field
        self.detail = detail


def too_large(what: str, detail: str) -> ActiveStorageError:
    """An object, decompressed chunk or request body over the server's limit: 400, as
    Reductionist answers its InsufficientMemory ("Insufficient memory to process
    request") and a JSON body over axum's limit.

    Example::

        >>> too_large("object", "5 bytes, more than the limit of 4").body()["error"]["message"]
        'Insufficient memory to process request: object too large'
    """
    return ActiveStorageError(400, f"Insufficient memory to process request: {what} too large",
                              [detail])


def redact_url(url: str) -> str:
    """``url`` without user info, query and fragment, safe to echo in errors and logs.

    Example::

        >>> redact_url("http://u:p@host:9000/bucket/key?X-Amz-Signature=abc")
        'http://host:9000/bucket/key'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything that
#: could end a log line or move a terminal's cursor
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    r"""``text`` with control characters escaped (``\n``, ``\x1b``, ``\u2028``), so a
    client cannot forge or split log lines with, say, ``%0A`` in a path. Backslashes
    are doubled first, so an escape in the log always means an escaped character.

    Example::

        >>> printable("/v2/sum\n2026-01-01 INFO forged")
        '/v2/sum\\n2026-01-01 INFO forged'
    """
    text = text.replace("\\", "\\\\")
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)
