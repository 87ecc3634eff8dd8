"""A linked file written after a session accepted it: each linked chunk read is
conditional on the file's version the open accepted (S3 If-Match, a local file's fstat),
so a read after the rewrite fails with LinkedFileChangedError instead of giving the new
bytes as the domain's values, in the client and on dask workers alike. Layouts that
recorded no version: a warning once per domain, and an opt-in layout check."""

from __future__ import annotations

import json
import warnings

import pytest
import xarray as xr
from ingest_helpers import aged, pair_bucket, write_pair

import h5dask
from h5dask.errors import LinkedFileChangedError, UnverifiedLinkWarning
from h5dask.ingest import load_file


def _linked(where, tmp_path, put_s3, s3_bucket_url, storage_options):
    """A domain linking the pair file; ``publish()`` puts the local file's bytes where
    the domain links them (S3: uploaded again)."""
    root, local = pair_bucket(tmp_path)
    if where == "file":
        src, url, opts = local, (root / "home" / "pair.h5").as_uri(), None
    else:
        src, url, opts = put_s3(local, "pair.h5"), f"{s3_bucket_url}/pair.h5", storage_options
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LocalLinkWarning
        load_file(src, url, link=True, storage_options=opts, progress=False)

    def publish():
        if where == "s3":
            put_s3(local, "pair.h5")
        else:
            aged(local)  # times a minute back again: only what a read can see moved

    return local, url, opts, publish


CHANGED = r"dataset '/a' of the domain .*pair\.h5 reads its chunks from .*pair\.h5, which " \
    r"was written after this session opened it.*Open the domain again"


@pytest.mark.parametrize("where", ["file", "s3"])
def test_a_file_rewritten_after_open_is_refused_not_read(where, tmp_path, put_s3,
                                                         s3_bucket_url, storage_options):
    """Open, read, then the file is rewritten in place to the same size with other
    values (the same layout: an open now would pass its check and read them; a reader
    that opened before has not checked them). One chunk (the task's own thread), several
    chunks (the I/O loop) and a dask array opened before the rewrite all fail, naming
    the dataset, the domain and the file, and saying what to do."""
    local, url, opts, publish = _linked(where, tmp_path, put_s3, s3_bucket_url,
                                        storage_options)
    with h5dask.File(url, storage_options=opts) as f:
        a = f["a"]
        ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=opts)
        assert a[()].tolist() == [1.0] * 40
        h5dask.reset_stats()
        assert a[0:8].tolist() == [1.0] * 8
        io = h5dask.stats()
        assert io["chunk"]["read_requests"] == 1 and io["metadata"]["read_requests"] == 0

        write_pair(local, scale=3.0)  # the same size and offsets, other values
        publish()
        for selection in (slice(0, 8), slice(None)):
            with pytest.raises(LinkedFileChangedError, match=CHANGED) as caught:
                a[selection]
            assert caught.value.uri.endswith("pair.h5")
        with pytest.raises(LinkedFileChangedError, match=r"'/a'.*written after"):
            ds["a"].load()
    with h5dask.File(url, storage_options=opts) as f:  # a new open checks, then reads
        assert f["a"][()].tolist() == [3.0] * 40


def test_a_worker_reading_after_the_rewrite_fails(cluster_client, tmp_path, put_s3,
                                                  s3_bucket_url, storage_options):
    """The accepted version travels with the task: a worker's read after the file was
    rewritten (opened and checked by the client before) fails, not returns new bytes."""
    local, url, opts, publish = _linked("s3", tmp_path, put_s3, s3_bucket_url,
                                        storage_options)
    v = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=opts)["a"]
    assert float(v.sum().compute()) == 40.0
    write_pair(local, scale=3.0)
    publish()
    with pytest.raises(LinkedFileChangedError, match=r"'/a'.*written after"):
        v.sum().compute()


def _unversioned(url_root, keep_size=False):
    """Make the domain's layouts as HSDS's hsload --link (or an earlier h5dask, with
    ``keep_size``) wrote them: no version, no path in the file."""
    for meta in url_root.rglob(".dataset.json"):
        obj = json.loads(meta.read_text())
        for layout in (obj["creationProperties"]["layout"], obj["layout"]):
            layout.pop("h5dask_file_version")
            layout.pop("h5dask_file_path")
            if not keep_size:
                layout.pop("h5dask_file_size")
        meta.write_text(json.dumps(obj))


@pytest.mark.parametrize("keep_size", [False, True])
def test_unversioned_links_warn_once_and_verify_on_request(keep_size, tmp_path, put_s3,
                                                           s3_bucket_url, storage_options,
                                                           monkeypatch):
    """A domain whose layouts recorded no version cannot tell a rewrite of the same size:
    opening it warns once (per domain and process) naming the domain and the option.
    ``verify_unversioned_links=True`` (or H5DASK_VERIFY_UNVERSIONED_LINKS=1) checks the
    layout against the file's metadata: the file regenerated with the variables swapped
    is refused instead of b's values read as a's; an unchanged file reads."""
    local, url, opts, publish = _linked("file", tmp_path, put_s3, s3_bucket_url,
                                        storage_options)
    _unversioned(tmp_path / "bucket", keep_size)
    monkeypatch.delenv("H5DASK_VERIFY_UNVERSIONED_LINKS", raising=False)
    with pytest.warns(UnverifiedLinkWarning, match=r"domain file://.*pair\.h5: .*no version"
                                                   r".*verify_unversioned_links=True"):
        with h5dask.File(url) as f:
            assert f["a"][()].tolist() == [1.0] * 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per domain
        with h5dask.File(url) as f:
            assert f["b"][()].tolist() == [2.0] * 40
        with h5dask.File(url, verify_unversioned_links=True) as f:
            assert f["a"][()].tolist() == [1.0] * 40  # the layout holds

        write_pair(local, "b", "a")  # the same size, each at the other's offsets
        with h5dask.File(url) as f:  # unverified: the documented gap
            assert f["a"][()].tolist() == [2.0] * 40
        with h5dask.File(url, verify_unversioned_links=True) as f:
            with pytest.raises(LinkedFileChangedError,
                               match=r"'/a'.*pair\.h5.*not recorded.*chunk 0"):
                f["a"][()]
        with pytest.raises(LinkedFileChangedError, match=r"variable 'a'.*pair\.h5"):
            xr.open_dataset(url, engine="h5cloud", chunks={}, verify_unversioned_links=True)
        monkeypatch.setenv("H5DASK_VERIFY_UNVERSIONED_LINKS", "1")
        with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError):
            f["b"][()]
