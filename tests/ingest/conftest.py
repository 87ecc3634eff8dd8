"""Fixtures for the ingest tests (``h5dask.ingest.load_file``, copy and link).

* ``synthetic_h5``: an HDF5 file written by h5py with one of everything load and link
  must handle (many chunks for H5D_CHUNKED_REF_INDIRECT, contiguous data larger than one
  HSDS virtual chunk for H5D_CONTIGUOUS_REF, gzip/shuffle/fletcher32 variants, a scalar,
  unallocated chunks with a fill value, compound/enum/vlen/reference data, a committed
  type, soft/hard/external links and attributes of many types).
* ``put_s3(path, key) -> s3 URL``: uploads a file into the SeaweedFS test bucket.
* ``s3_listing(url) -> {key: size}``: the objects under a URL's prefix.
* ``domain_db_objects(url, storage_options) -> {key: size}``: the objects of a domain.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ingest_helpers import write_synthetic

from h5dask.format import ids


@pytest.fixture(scope="session")
def synthetic_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("ingest") / "synthetic.h5")


@pytest.fixture
def put_s3(seaweedfs: Any, s3_bucket_url: str) -> Callable[[Path, str], str]:
    """Upload a file under this test's prefix of the SeaweedFS bucket; returns its URL."""
    client = seaweedfs.s3_client()
    bucket, prefix = urlsplit(s3_bucket_url).netloc, urlsplit(s3_bucket_url).path.strip("/")

    def put(path: Path, name: str) -> str:
        key = f"{prefix}/files/{name}"
        client.put_object(Bucket=bucket, Key=key, Body=Path(path).read_bytes())
        return f"s3://{bucket}/{key}"

    return put


@pytest.fixture
def s3_listing(seaweedfs: Any) -> Callable[[str], dict[str, int]]:
    client = seaweedfs.s3_client()

    def listing(url: str) -> dict[str, int]:
        parts = urlsplit(url)
        out = {}
        pages = client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=parts.netloc, Prefix=parts.path.lstrip("/")):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    return listing


@pytest.fixture
def domain_db_objects(seaweedfs: Any) -> Callable[[str], dict[str, int]]:
    """Every object of the domain at an s3:// URL: {key: size} under db/<root>/."""
    client = seaweedfs.s3_client()

    def objects(url: str) -> dict[str, int]:
        parts = urlsplit(url)
        bucket, domain = parts.netloc, parts.path.strip("/")
        body = client.get_object(Bucket=bucket, Key=f"{domain}/.domain.json")["Body"].read()
        root = json.loads(body)["root"]
        prefix = ids.object_prefix(root) + "/"
        out = {}
        pages = client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    return objects


@pytest.fixture
def fresh() -> Callable[[str], str]:
    """A domain name HSDS has never seen (it caches domain metadata by name)."""
    return lambda name: f"{uuid.uuid4().hex[:10]}-{name}"
