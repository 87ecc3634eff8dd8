"""The three storage back ends the storage-core tests run on: memory://, file:// and the
real SeaweedFS S3 server of the session fixture.

A test module uses it as::

    @pytest.fixture(params=BACKENDS)
    def backend(request, tmp_path) -> Backend:
        return make_backend(request, tmp_path)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from h5dask.storage import Location, ObjectStore, open_location

BACKENDS = ("memory", "file", "s3")


@dataclass
class Backend:
    """Where one test's domains go: ``url(name)`` is a domain URL in a fresh bucket root."""

    kind: str
    base: str
    options: dict[str, Any] | None

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def location(self, name: str = "any.h5") -> Location:
        return open_location(self.url(name), self.options)

    def store(self) -> ObjectStore:
        """The store holding this test's bucket root."""
        return self.location().store

    def domain(self, name: str) -> str:
        """The domain path of ``url(name)`` inside the bucket root (for external links)."""
        return self.location(name).domain


def make_backend(request: pytest.FixtureRequest, tmp_path: Path,
                 kind: str | None = None) -> Backend:
    kind = kind or request.param
    if kind == "memory":
        return Backend(kind, f"memory://{uuid.uuid4().hex}", None)
    if kind == "file":
        return Backend(kind, f"file://{tmp_path}/bucket", None)
    if kind == "s3":
        base = request.getfixturevalue("s3_bucket_url")
        return Backend(kind, base, dict(request.getfixturevalue("storage_options")))
    raise ValueError(kind)
