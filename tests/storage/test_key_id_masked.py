"""Refusals never print the access key id (as the AWS CLI and boto, which show nothing or
its last 4 characters): every refusal path of the S3 store, h5dask.File, the CLI, the
logs and the reprs of the settings and of the active server's credentials are scanned
for the whole key id."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import h5dask
from h5dask.active.upstream import Credentials, _StaticCredentials
from h5dask.errors import StoragePermissionError
from h5dask.storage import open_location, sync
from h5dask.storage.s3_options import resolve_s3_settings

KEY_ID = "AKIAH5DASKNOTAREALKEY"  # unknown to the server: InvalidAccessKeyId


def _refusals(store) -> list[str]:
    calls = [lambda: store.get("db/k"), lambda: store.put("db/k", b"x"),
             lambda: store.list("db/"), lambda: store.list_dir("db/"),
             lambda: store.size("db/k"), lambda: store.delete("db/k"),
             lambda: store.list_modified("db/")]
    messages = []
    for call in calls:
        with pytest.raises(StoragePermissionError) as err:
            sync(call())
        messages.append(str(err.value))
    return messages


def test_no_refusal_message_or_log_holds_the_key_id(storage_options, s3_bucket_url,
                                                    caplog) -> None:
    caplog.set_level(logging.DEBUG)
    options = {**storage_options, "key": KEY_ID}
    store = open_location(f"{s3_bucket_url}/x.h5", options).store
    messages = _refusals(store)
    with pytest.raises(StoragePermissionError) as err:
        h5dask.File(f"{s3_bucket_url}/x.h5", storage_options=options)
    messages.append(str(err.value))
    for message in messages:
        assert KEY_ID not in message, message
        assert "was refused by the object store" in message
    # which key it was can still be told, by its last 4 characters
    assert "key id *****************LKEY" in messages[0]
    assert KEY_ID not in caplog.text


def test_a_refused_secret_names_no_key_id_either(storage_options, s3_bucket_url) -> None:
    """SignatureDoesNotMatch: the server knows the key id (a short one: shown as ****)."""
    store = open_location(f"{s3_bucket_url}/x.h5",
                          {**storage_options, "secret": "not-the-secret"}).store
    for message in _refusals(store):
        assert f"'{storage_options['key']}'" not in message, message
        assert "key id ****)" in message


def test_cli_refusal_prints_no_key_id(seaweedfs, s3_bucket_url) -> None:
    """``h5dask --debug ls`` (tracebacks and logs shown) with a refused key id."""
    import os

    env = {**os.environ, **seaweedfs.env(), "AWS_ACCESS_KEY_ID": KEY_ID}
    run = subprocess.run([sys.executable, "-m", "h5dask.cli", "--debug", "ls",
                          f"{s3_bucket_url}/"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "InvalidAccessKeyId" in run.stderr + run.stdout
    assert KEY_ID not in run.stderr + run.stdout


def test_reprs_hold_no_key_id() -> None:
    settings = resolve_s3_settings({"key": KEY_ID, "secret": "s"}, environ={})
    assert KEY_ID not in repr(settings)
    credentials = Credentials(KEY_ID, "s")
    assert KEY_ID not in repr(credentials) and KEY_ID not in repr(_StaticCredentials(credentials))
    assert repr(credentials) == "Credentials(access_key='*****************LKEY')"
