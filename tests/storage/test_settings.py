"""Store tuning, the one resolver of storage_options, and what others ask of a store
(``object_url``, ``server_credentials``) on every back end."""

from __future__ import annotations

import pickle
import urllib.request
import uuid

import pytest
from storage_backends import BACKENDS, Backend, make_backend

from h5dask.errors import H5DaskError, StorageOptionsError
from h5dask.storage import (
    RetryPolicy,
    StoreTuning,
    open_location,
    open_object,
    resolve_storage_options,
    sync,
)
from h5dask.storage.settings import DEFAULT_TUNING, TUNING_OPTIONS


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    return make_backend(request, tmp_path)


# -- the resolver -------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "concurrency", "attempts"),
                         [("s3", 64, 8), ("file", 32, 2), ("fsspec", 32, 8)])
def test_each_back_end_has_its_defaults(kind, concurrency, attempts) -> None:
    tuning, rest = resolve_storage_options(None, kind)
    assert (tuning.max_concurrency, tuning.retry.max_attempts, rest) == (
        concurrency, attempts, {})


def test_tuning_is_split_from_the_back_end_options() -> None:
    tuning, rest = resolve_storage_options(
        {"anon": True, "max_concurrency": "5", "max_attempts": 3, "retry_base_delay": 0,
         "multipart_threshold": 4096, "part_size": 1024, "timeout": 7, "connect_timeout": 2},
        "s3")
    assert rest == {"anon": True}
    assert tuning == StoreTuning(max_concurrency=5, retry=RetryPolicy(3, 0.0),
                                 multipart_threshold=4096, part_size=1024, timeout=7.0,
                                 connect_timeout=2.0)
    # and the tuning rebuilds itself from its options (how linked files are opened)
    assert DEFAULT_TUNING["fsspec"].with_options(tuning.as_options()) == tuning
    assert set(tuning.as_options()) == set(TUNING_OPTIONS)


def test_unknown_names_get_one_error_naming_them_and_the_valid_ones() -> None:
    with pytest.raises(StorageOptionsError) as caught:
        resolve_storage_options({"bogus": 1, "max_concurency": 4, "anon": True}, "s3")
    message = str(caught.value)
    assert "['bogus', 'max_concurency']" in message
    assert "max_concurrency" in message.split("valid:")[1]
    assert "endpoint_url" in message.split("valid:")[1]
    assert isinstance(caught.value, H5DaskError) and isinstance(caught.value, ValueError)
    with pytest.raises(StorageOptionsError, match=r"unknown file:// storage_options "
                                                  r"\['anon'\]; valid: .*'bucket_root'"):
        resolve_storage_options({"anon": True}, "file")


def test_every_entry_point_uses_the_resolver(tmp_path) -> None:
    for url in ("s3://bkt/home/x.h5", f"file://{tmp_path}/home/x.h5"):
        with pytest.raises(StorageOptionsError, match=r"\['bogus'\]"):
            open_location(url, {"bogus": 1, "anon": True} if url.startswith("s3") else
                          {"bogus": 1})
        with pytest.raises(StorageOptionsError, match=r"\['bogus'\]"):
            open_object(url, {"bogus": 1})


@pytest.mark.parametrize("options", [
    {"max_concurrency": 0}, {"max_concurrency": "many"}, {"timeout": -1},
    {"part_size": 100, "multipart_threshold": 10}, {"max_attempts": 0},
    {"max_attempts": True},
])
def test_bad_tuning_values_are_refused_by_name(options) -> None:
    with pytest.raises(StorageOptionsError, match=sorted(options)[0]):
        resolve_storage_options(options, "fsspec")


# -- stores are cached by (type, settings) and travel whole --------------------------------
def test_stores_are_cached_by_type_and_settings(tmp_path) -> None:
    url = f"file://{tmp_path}/bucket/home/x.h5"
    root = {"bucket_root": str(tmp_path / "bucket")}
    first = open_location(url, root).store
    assert open_location(url, {**root, "max_concurrency": 32}).store is first  # the default
    other = open_location(url, {**root, "max_concurrency": 3}).store
    assert other is not first and other.tuning.max_concurrency == 3
    assert pickle.loads(pickle.dumps(other)) is other
    assert open_object(f"file://{tmp_path}/bucket/x.h5", other.tuning_options())[0] is other


def test_tuning_travels_with_the_store(backend: Backend) -> None:
    store = open_location(backend.url("t.h5"), {**(backend.options or {}),
                                                "max_attempts": 5, "max_concurrency": 7}).store
    copy = pickle.loads(pickle.dumps(store))
    assert copy.tuning == store.tuning
    assert (copy.max_concurrency, copy.retry.max_attempts) == (7, 5)


# -- what the active-storage server needs, asked of the store ------------------------------
def test_object_url_and_server_credentials(backend: Backend, seaweedfs_if_s3) -> None:
    store = backend.store()
    key = f"{backend.domain('obj.h5')}/probe-{uuid.uuid4().hex}"
    sync(store.put(key, b"reachable", kind="other"))
    url, credentials = store.object_url(key), store.server_credentials()
    if backend.kind != "s3":
        assert (url, credentials) == (None, None)  # nothing a server could GET
        return
    endpoint = seaweedfs_if_s3.endpoint
    assert url == f"{endpoint}/{store.bucket}/{key}"
    assert credentials == (backend.options["key"], backend.options["secret"])
    assert _signed_get(url, credentials) == b"reachable"  # what the server will do


def test_anonymous_s3_forwards_no_credentials(monkeypatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    store = open_location("s3://bkt/x.h5", {"anon": True,
                                            "endpoint_url": "http://127.0.0.1:1"}).store
    assert store.server_credentials() is None
    assert store.object_url("db/k") == "http://127.0.0.1:1/bkt/db/k"
    no_endpoint = open_location("s3://bkt/x.h5", {"anon": True}).store
    assert no_endpoint.object_url("db/k") is None  # the server could not tell where


@pytest.fixture
def seaweedfs_if_s3(request, backend: Backend):
    return request.getfixturevalue("seaweedfs") if backend.kind == "s3" else None


def _signed_get(url: str, credentials: tuple[str, str]) -> bytes:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(*credentials), "s3", "us-east-1").add_auth(request)
    with urllib.request.urlopen(urllib.request.Request(url, headers=dict(request.headers)),
                                timeout=30) as response:
        return response.read()
