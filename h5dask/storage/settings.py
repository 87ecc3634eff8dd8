"""Store tuning and the one resolver of ``storage_options``.

``storage_options`` mix two kinds of names: h5dask's tuning (concurrency, retries, part
sizes, timeouts), the same for every back end, and the back end's own options
(credentials and endpoint for S3, ``bucket_root`` for file://, file-system arguments for
fsspec). :func:`resolve_storage_options` splits them, in this one place, into a frozen
:class:`StoreTuning` (with the back end's defaults, defined once in
:data:`DEFAULT_TUNING`) and the back end's options, and refuses names nobody knows.

>>> tuning, rest = resolve_storage_options({"max_attempts": 3, "anon": True}, "s3")
>>> (tuning.max_concurrency, tuning.retry.max_attempts, rest)
(64, 3, {'anon': True})
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import StorageOptionsError

MiB = 2**20
#: a body of known length may take ``timeout`` for its answer and ``timeout`` more per
#: BODY_PIECE of it (:func:`body_limit`; S3 GETs over 1 MiB, other fsspec file systems'
#: ranged and bounded GETs), never a fixed time for the whole transfer: only a link slower
#: than about 4 KB/s (with the default 60 s) counts as stalled
BODY_PIECE = 256 * 1024
#: the longest a transfer of known length is given (seconds), unless ``timeout`` is longer:
#: at the rate that counts as stalled an 8 MiB part would otherwise get 33 minutes
BODY_LIMIT_CAP = 600.0


def body_limit(timeout: float, length: int) -> float:
    """How long a transfer of ``length`` bytes may take in all: ``timeout`` x (1 + length
    / BODY_PIECE) (the client cannot tell a slow body from a stalled one, so a steady one
    gets the time it needs at the slowest rate that is not a stall), at most
    max(``timeout``, :data:`BODY_LIMIT_CAP`).

    >>> body_limit(60, 1 << 20), body_limit(60, 8 << 20), body_limit(900, 8 << 20)
    (300.0, 600.0, 900.0)
    """
    return min(timeout * (1 + length / BODY_PIECE), max(float(timeout), BODY_LIMIT_CAP))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently failed requests are retried.

    >>> RetryPolicy(max_attempts=3).delay(1) <= RetryPolicy(max_attempts=3).max_delay
    True
    """

    max_attempts: int = 8
    base_delay: float = 0.05
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise StorageOptionsError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise StorageOptionsError("retry delays must not be negative")

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class StoreTuning:
    """How a store talks to its back end; frozen and hashable (part of the store cache key,
    and pickled with the store to dask workers).

    >>> StoreTuning(max_concurrency=4).as_options()["max_concurrency"]
    4
    """

    max_concurrency: int = 32
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: objects larger than this are read as concurrent ranged GETs of ``part_size``
    multipart_threshold: int = 32 * MiB
    part_size: int = 8 * MiB
    #: seconds for a whole request, and for connecting (as obstore's and s3fs's, much
    #: shorter: a connection is made in milliseconds or not at all)
    timeout: float = 60.0
    connect_timeout: float = 5.0
    #: seconds one operation may take, all its attempts and the waits between them
    #: together: no attempt starts after it (one under way ends within ``timeout``), so
    #: an endpoint that never answers is reported after two attempts, not ``max_attempts``
    deadline: float = 120.0

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.part_size < 1 \
                or self.multipart_threshold < self.part_size:
            raise StorageOptionsError(
                "storage_options need max_concurrency >= 1 and multipart_threshold >= "
                f"part_size >= 1; got max_concurrency={self.max_concurrency}, "
                f"multipart_threshold={self.multipart_threshold}, part_size={self.part_size}")
        if self.timeout <= 0 or self.connect_timeout <= 0 or self.deadline <= 0:
            raise StorageOptionsError("storage_options timeout, connect_timeout and deadline "
                                      "must be positive (seconds)")

    def with_options(self, options: Mapping[str, Any]) -> StoreTuning:
        """This tuning with the tuning names among ``options`` applied (others ignored)."""
        values = {name: _number(options, name) for name in TUNING_OPTIONS if name in options}
        retry = self.retry
        if "max_attempts" in values or "retry_base_delay" in values:
            retry = replace(retry, max_attempts=int(values.pop("max_attempts", retry.max_attempts)),
                            base_delay=values.pop("retry_base_delay", retry.base_delay))
        return replace(self, retry=retry, **values)

    def as_options(self) -> dict[str, Any]:
        """This tuning as ``storage_options``, to open another store the same way."""
        return {"max_concurrency": self.max_concurrency,
                "max_attempts": self.retry.max_attempts,
                "retry_base_delay": self.retry.base_delay,
                "multipart_threshold": self.multipart_threshold, "part_size": self.part_size,
                "timeout": self.timeout, "connect_timeout": self.connect_timeout,
                "deadline": self.deadline}


#: h5dask's own options, accepted by every back end next to its own ones
TUNING_OPTIONS = ("max_concurrency", "max_attempts", "retry_base_delay", "multipart_threshold",
                  "part_size", "timeout", "connect_timeout", "deadline")
_INTEGER_OPTIONS = {"max_concurrency", "max_attempts", "multipart_threshold", "part_size"}

#: each back end's defaults: S3 latency is hidden by many requests in flight; a local
#: file system's errors are seldom transient, so they are retried once only
DEFAULT_TUNING = {
    "s3": StoreTuning(max_concurrency=64),
    "file": StoreTuning(retry=RetryPolicy(max_attempts=2)),
    "fsspec": StoreTuning(),
}

#: the back ends' own option names (fsspec: any, its file system checks them)
S3_OPTIONS = frozenset({
    "anon", "key", "secret", "token", "endpoint_url", "region", "region_name",
    "client_kwargs", "config_kwargs", "profile", "use_ssl", "addressing_style",
    "ca_bundle", "verify", "requester_pays",
})
_BACKEND_OPTIONS: dict[str, tuple[str, frozenset[str] | None]] = {
    "s3": ("S3", S3_OPTIONS),
    "file": ("file://", frozenset({"bucket_root"})),
    "fsspec": ("fsspec", None),
}


def _number(options: Mapping[str, Any], name: str) -> int | float:
    value = options[name]
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(value) if name in _INTEGER_OPTIONS else float(value)
    except (TypeError, ValueError):
        kind = "an integer" if name in _INTEGER_OPTIONS else "a number"
        raise StorageOptionsError(
            f"storage_options {name}={value!r} is not valid: give {kind}") from None


def refuse_unknown(options: Mapping[str, Any], backend: str) -> None:
    """Raise one :class:`StorageOptionsError` naming every option ``backend`` does not
    know, and listing the valid ones.

    >>> refuse_unknown({"bucket_root": "/d", "bogus": 1}, "file")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    h5dask.errors.StorageOptionsError: unknown file:// storage_options ['bogus']; valid: ...
    """
    label, known = _BACKEND_OPTIONS[backend]
    if known is None:
        return
    valid = known | set(TUNING_OPTIONS)
    unknown = set(options) - valid
    if unknown:
        hint = ""
        if backend == "file" and unknown & S3_OPTIONS:
            # the usual cause: "bucket/home/run1.h5" written without its s3://
            hint = ("; they are S3 options, but the URL is a local path: write the URL "
                    "as s3://bucket/path for S3")
        raise StorageOptionsError(
            f"unknown {label} storage_options {sorted(unknown)}; valid: {sorted(valid)}{hint}")


def resolve_storage_options(options: Mapping[str, Any] | None, backend: str
                            ) -> tuple[StoreTuning, dict[str, Any]]:
    """Split ``storage_options`` for ``backend`` ("s3", "file" or "fsspec") into its
    :class:`StoreTuning` (the back end's defaults, overridden) and the back end's own
    options; unknown names raise :class:`StorageOptionsError`.

    >>> tuning, rest = resolve_storage_options({"bucket_root": "/d", "max_concurrency": 4}, "file")
    >>> (tuning.max_concurrency, tuning.retry.max_attempts, rest)
    (4, 2, {'bucket_root': '/d'})
    """
    options = dict(options or {})
    refuse_unknown(options, backend)
    tuning = DEFAULT_TUNING[backend].with_options(options)
    return tuning, {k: v for k, v in options.items() if k not in TUNING_OPTIONS}
