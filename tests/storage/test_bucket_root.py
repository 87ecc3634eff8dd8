"""The bucket root of a file:// URL or plain path: never outside what the user named.

The rule is in h5dask/storage/bucket_root.py and the README ("Where file:// domains keep
their objects").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import h5dask
from h5dask.errors import AmbiguousBucketRootError
from h5dask.storage import open_location


def _write(url: str, **options) -> str:
    with h5dask.File(url, "w", storage_options=options or None) as f:
        f["x"] = np.arange(4)
        return f.id


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_an_ancestors_db_is_never_used_for_a_new_domain(tmp_path):
    """The reported case: /W/db left by an earlier load; a new domain under
    /W/baretest/root/home must not put its objects into /W/db."""
    _write(f"file://{tmp_path}/earlier.h5")  # makes tmp_path a bucket (tmp_path/db)
    before = _files(tmp_path)
    url = f"file://{tmp_path}/baretest/root/home/daily.h5"
    with pytest.raises(AmbiguousBucketRootError) as err:
        _write(url)
    message = str(err.value)
    assert "bucket_root" in message and "--bucket-root" in message
    assert str(tmp_path) in message and f"{tmp_path}/baretest/root/home" in message
    assert _files(tmp_path) == before  # nothing written anywhere

    # naming the bucket root puts everything inside it
    bucket = tmp_path / "baretest" / "root"
    root = _write(url, bucket_root=str(bucket))
    new = _files(tmp_path) - before
    assert new and all(f.startswith("baretest/root/") for f in new)
    assert f"baretest/root/db/{root[2:19]}/.group.json" in new
    assert "baretest/root/home/daily.h5/.domain.json" in new
    # ... and, being a domain now, it is found again without the option
    with h5dask.File(url) as f:
        np.testing.assert_array_equal(f["x"][...], np.arange(4))


def test_plain_path_puts_db_beside_the_domain(tmp_path, monkeypatch):
    """A plain (relative) path: the directory holding the domain is the bucket root."""
    monkeypatch.chdir(tmp_path)
    root = _write("localdom.h5")
    assert sorted(os.listdir(tmp_path)) == ["db", "localdom.h5"]
    assert (tmp_path / "db" / root[2:19] / ".group.json").is_file()
    loc = open_location("localdom.h5")
    assert loc.store.root_url == tmp_path.as_uri() and loc.domain == "localdom.h5"


def test_second_domain_in_the_same_directory_joins_its_bucket(tmp_path):
    _write(f"file://{tmp_path}/a.h5")
    _write(f"file://{tmp_path}/b.h5")
    assert sorted(os.listdir(tmp_path)) == ["a.h5", "b.h5", "db"]
    assert len(os.listdir(tmp_path / "db")) == 2


def test_an_unrelated_db_folder_above_is_not_a_bucket(tmp_path):
    """A user's own folder named db/ (no HSDS objects) in an ancestor changes nothing."""
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "notes.txt").write_text("mine")
    _write(f"file://{tmp_path}/project/run.h5")
    assert sorted(os.listdir(tmp_path / "project")) == ["db", "run.h5"]
    assert os.listdir(tmp_path / "db") == ["notes.txt"]


def test_existing_domain_is_read_where_its_objects_are(tmp_path):
    """A domain whose objects lie in an ancestor's db/ (as HSDS or an explicit bucket_root
    wrote it) stays readable without options: its root group says where."""
    url = f"file://{tmp_path}/bucket/home/me/old.h5"
    _write(url, bucket_root=str(tmp_path / "bucket"))
    loc = open_location(url)
    assert loc.store.root_url == (tmp_path / "bucket").as_uri()
    assert loc.domain == "home/me/old.h5"


def test_memory_protocol_follows_the_same_rule():
    base = "memory://bucket-root-rule"
    _write(f"{base}/first.h5")
    with pytest.raises(AmbiguousBucketRootError):
        _write(f"{base}/deeper/second.h5")
    _write(f"{base}/deeper/second.h5", bucket_root="/bucket-root-rule")
    with h5dask.File(f"{base}/deeper/second.h5") as f:
        assert f["x"].shape == (4,)


def test_an_empty_db_above_marks_a_bucket_made_for_domains(tmp_path):
    """mkdir BUCKET/db (as for HSDS), or a bucket emptied by rm: domains below join it."""
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    root = _write(f"file://{tmp_path}/bucket/home/me/a.h5")
    assert (tmp_path / "bucket" / "db" / root[2:19] / ".group.json").is_file()
    assert not (tmp_path / "bucket" / "home" / "me" / "db").exists()


def test_a_new_domain_next_to_existing_ones_joins_their_bucket(tmp_path):
    bucket = tmp_path / "bucket"
    _write(f"file://{bucket}/home/one.h5", bucket_root=str(bucket))
    root = _write(f"file://{bucket}/home/two.h5")  # no option needed now
    assert (bucket / "db" / root[2:19] / ".group.json").is_file()
    assert not (bucket / "home" / "db").exists()


def test_explicit_bucket_root_must_contain_the_domain(tmp_path):
    with pytest.raises(ValueError, match="not inside bucket_root"):
        _write(f"file://{tmp_path}/elsewhere/x.h5", bucket_root=str(tmp_path / "root"))


class _FlakyMemory:
    """A memory file system whose next ``failures`` reads of a .domain.json fail as a
    dropped connection does (registered as flakymem://, built on first use)."""

    failures = 0

    @classmethod
    def register(cls) -> None:
        import fsspec
        from fsspec.implementations.memory import MemoryFileSystem

        class FlakyMemoryFileSystem(MemoryFileSystem):
            protocol = "flakymem"

            @classmethod
            def _strip_protocol(cls, path: str) -> str:  # memory's, for this scheme
                if path.startswith("flakymem://"):
                    path = "memory://" + path[len("flakymem://"):]
                return super()._strip_protocol(path)

            def cat_file(self, path, start=None, end=None, **kwargs):  # noqa: ANN001
                if path.endswith(".domain.json") and cls.failures > 0:
                    cls.failures -= 1
                    raise ConnectionResetError("connection reset by peer")
                return super().cat_file(path, start=start, end=end, **kwargs)

        fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)


def test_the_bucket_root_probe_reads_through_the_store():
    """The probe's reads of .domain.json were fs.cat_file calls: never retried nor
    counted, and a failed one was taken for a missing file, so the domain below (its
    db/ in /flaky-fb, two levels up) was looked for in /flaky-fb/home: 'not found'. Now they are
    the store's reads: retried, counted, and a read that fails for good is an error."""
    from h5dask.errors import StorageError

    _FlakyMemory.register()
    url = "flakymem://flaky-fb/home/x.h5"
    _write(url, bucket_root="/flaky-fb")
    _FlakyMemory.failures = 2
    h5dask.reset_stats()
    location = open_location(url, {"retry_base_delay": 0})
    assert (location.store.root_url, location.domain) == ("flakymem://flaky-fb", "home/x.h5")
    assert h5dask.stats()["other"]["retries"] == 2  # (finding where a domain is: "other")
    assert h5dask.stats()["other"]["read_requests"] >= 1
    _FlakyMemory.failures = 10**6
    try:
        with pytest.raises(StorageError, match=r"home/x\.h5/\.domain\.json failed after 2 "
                                               "attempts.*connection reset"):
            open_location(url, {"max_attempts": 2, "retry_base_delay": 0})
    finally:
        _FlakyMemory.failures = 0
