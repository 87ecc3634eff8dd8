"""Validation of object keys: nothing may escape the bucket root."""

from __future__ import annotations

from ..errors import InvalidKeyError


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise InvalidKeyError.

    >>> check_key("db/0123abcd-4567ef01/.group.json")
    'db/0123abcd-4567ef01/.group.json'
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"object key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or not key.isprintable():
        raise InvalidKeyError(
            f"object key {key!r} must be relative, without '\\', NUL or control characters")
    parts = key.split("/")
    if any(p in ("..", ".", "") for p in parts):  # "a/" would alias "a" on a file system
        raise InvalidKeyError(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


def check_prefix(prefix: str) -> str:
    """Like :func:`check_key` for listing prefixes (may be empty or end in '/')."""
    if prefix == "":
        return prefix
    check_key(prefix.rstrip("/") or "x")
    return prefix
