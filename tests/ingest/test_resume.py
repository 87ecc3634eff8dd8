"""An interrupted ``h5dask load`` resumes: run again, it keeps the chunk objects the
killed run stored (checked byte for byte: their listed MD5, else their bytes), writes
only the others, removes chunk objects it would not write, and then publishes a domain
that reads as h5py reads the file (user ask 3: a 30 GB upload that fails after two days
starts over; hsds#329).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import h5dask
from h5dask.cli import main
from h5dask.ingest import load_file
from h5dask.storage import open_location, sync

KILLED_LOAD = Path(__file__).with_name("killed_load.py")
A_CHUNKS = 8 * 6 - 1  # chunk (7, 5) of "a" is never written: the fill value
TOTAL_CHUNKS = A_CHUNKS + 10


def write_source(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        a = f.create_dataset("a", shape=(64, 48), chunks=(8, 8), dtype="<f8", fillvalue=-1.0,
                             compression="gzip")
        a[:56, :] = rng.standard_normal((56, 48))
        a[56:, :40] = rng.standard_normal((8, 40))
        f.create_dataset("grp/b", data=np.arange(100, dtype="<i4") * seed, chunks=(10,))
        f["grp"].attrs["note"] = "resumable"


def local_domain(tmp_path: Path, name: str) -> str:
    """A domain in a local bucket (the directory holding db/). Not in a folder below it:
    there the objects the killed run left make db/ a bucket's, and which bucket a new
    domain joins is then for the user to say (bucket_root), not guessed."""
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    return (tmp_path / "bucket" / name).as_uri()


def kill_a_load(src: Path, url: str, options: dict, after_chunks: int) -> None:
    run = subprocess.run([sys.executable, str(KILLED_LOAD), str(src), url, json.dumps(options),
                          str(after_chunks)], capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, run.stderr[-2000:]  # SIGKILLed: no cleanup ran


def chunk_keys(store: Any) -> list[str]:
    return [k for k in sync(store.list("db/")) if not k.endswith(".json")]


def assert_reads_as_h5py(url: str, options: dict, src: Path) -> None:
    with h5dask.File(url, storage_options=options) as got, h5py.File(src) as want:
        for name in ("a", "grp/b"):
            np.testing.assert_array_equal(got[name][...], want[name][...])
        assert got["grp"].attrs["note"] == "resumable"


@pytest.fixture(params=["s3", "file"])
def place(request: Any, tmp_path: Path) -> tuple[str, dict]:
    """Where the domain goes: SeaweedFS (MD5s from the listing), or a local bucket (no
    MD5s listed: the stored bytes are compared)."""
    if request.param == "s3":
        options = request.getfixturevalue("storage_options")
        return f"{request.getfixturevalue('s3_bucket_url')}/resumed.h5", options
    return local_domain(tmp_path, "resumed.h5"), {}


def test_a_killed_load_run_again_resumes_without_uploading_what_is_stored(
        tmp_path: Path, place: tuple[str, dict]) -> None:
    url, options = place
    src = tmp_path / "src.h5"
    write_source(src, seed=1)
    store = open_location(url, options).store
    before = set(chunk_keys(store))  # (the S3 bucket's db/ holds other tests' domains)
    kill_a_load(src, url, options, after_chunks=20)
    with pytest.raises(FileNotFoundError):  # nothing published
        h5dask.File(url, storage_options=options)
    stored = sorted(set(chunk_keys(store)) - before)
    assert 20 <= len(stored) < TOTAL_CHUNKS, stored
    # what an earlier run may leave besides good chunks: one whose bytes differ from
    # what the load writes, and one at the index of the chunk the file never wrote
    # (read as values if it stayed): both valid gzip chunks of other values
    other = sync(store.get(stored[1]))
    sync(store.put(stored[0], other))
    stray = stored[0].rsplit("/", 1)[0] + "/7_5"
    sync(store.put(stray, other))

    h5dask.reset_stats()
    summary = load_file(src, url, storage_options=options, progress=False)
    assert summary.chunks_kept == len(stored) - 1, str(summary)  # all but the changed one
    assert summary.chunks_written == TOTAL_CHUNKS - summary.chunks_kept
    assert h5dask.stats()["chunk"]["write_requests"] == summary.chunks_written
    assert f"resumed: {summary.chunks_kept} chunks" in str(summary)
    assert sync(store.get(stray)) is None
    assert len(set(chunk_keys(store)) - before) == TOTAL_CHUNKS
    assert_reads_as_h5py(url, options, src)


def test_a_load_of_a_changed_file_never_keeps_the_chunks_of_the_old_one(
        tmp_path: Path) -> None:
    url = local_domain(tmp_path, "changed.h5")
    src = tmp_path / "src.h5"
    write_source(src, seed=1)
    kill_a_load(src, url, {}, after_chunks=20)
    write_source(src, seed=2)  # the file changed before the load was run again
    summary = load_file(src, url, progress=False)
    assert summary.chunks_kept == 0 and summary.chunks_written == TOTAL_CHUNKS
    assert_reads_as_h5py(url, {}, src)


def test_a_load_that_the_store_fails_keeps_its_chunks_for_the_next_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that keeps failing (503s past the retry budget): the error says how to go
    on, the chunks stay (unpublished) and the next run keeps them."""
    from h5dask.storage.base import ObjectStore

    url = local_domain(tmp_path, "failed.h5")
    src = tmp_path / "src.h5"
    write_source(src, seed=1)
    put = ObjectStore.put
    done = []

    async def failing_put(self: Any, key: str, data: Any, *, kind: str = "chunk") -> None:
        if kind == "chunk" and len(done) >= 30:
            raise h5dask.StorageError(f"PUT of {key} failed after 8 attempts: SlowDown",
                                      key=key, attempts=8)
        await put(self, key, data, kind=kind)
        if kind == "chunk":  # (not the metadata objects, nor the load's lease)
            done.append(key)

    monkeypatch.setattr(ObjectStore, "put", failing_put)
    with pytest.raises(h5dask.StorageError) as info:
        load_file(src, url, progress=False, max_workers=1)
    assert "run the same load again to resume" in "".join(info.value.__notes__)
    done[:] = [""] * 30  # the command line says so too (its first new chunk fails)
    run = CliRunner().invoke(main, ["load", "--no-progress", str(src), url])
    assert run.exit_code != 0 and "run the same load again to resume" in run.output, \
        run.output
    monkeypatch.setattr(ObjectStore, "put", put)
    summary = load_file(src, url, progress=False)
    assert summary.chunks_kept == 30 and summary.chunks_written == TOTAL_CHUNKS - 30
    assert_reads_as_h5py(url, {}, src)


def test_kept_chunks_deleted_while_the_load_runs_stop_it_before_it_publishes(
        tmp_path: Path, place: tuple[str, dict], monkeypatch) -> None:
    """Kept chunks can be older than `h5dask gc`'s min_age, so a gc --delete during the
    resumed run may remove them: the load then publishes nothing and says so (a domain
    without them would read fill values), and the next run writes them anew."""
    from h5dask.ingest.copy import ChunkCopier

    url, options = place
    src = tmp_path / "src.h5"
    write_source(src, seed=3)
    store = open_location(url, options).store
    before = set(chunk_keys(store))
    kill_a_load(src, url, options, after_chunks=20)
    kept = sorted(set(chunk_keys(store)) - before)[0]
    delete_unwritten = ChunkCopier.delete_unwritten

    async def and_a_kept_chunk_goes(self: ChunkCopier) -> None:
        await store.delete(kept)  # as a gc --delete would
        await delete_unwritten(self)

    monkeypatch.setattr(ChunkCopier, "delete_unwritten", and_a_kept_chunk_goes)
    with pytest.raises(h5dask.errors.StorageError, match="deleted while it ran"):
        load_file(src, url, storage_options=options, progress=False)
    with pytest.raises(FileNotFoundError):  # nothing published
        h5dask.File(url, storage_options=options)
    monkeypatch.undo()
    summary = load_file(src, url, storage_options=options, progress=False)
    assert summary.chunks_kept >= 19
    assert_reads_as_h5py(url, options, src)


def test_a_resumed_load_on_s3_lists_its_root_once_to_find_what_is_stored(
        tmp_path: Path, storage_options: dict, s3_bucket_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and their listed MD5s come from one listing of db/<root>/ (before: a LIST of
    the keys, then another for the MD5s of at most one page); the only other listing of
    its keys is the check, just before publishing, that the kept chunks are still there
    (the lease's one-level listings of its own objects are not counted here)."""
    from h5dask.storage.base import ObjectStore

    url = f"{s3_bucket_url}/listed-once.h5"
    src = tmp_path / "src.h5"
    write_source(src, seed=1)
    kill_a_load(src, url, storage_options, after_chunks=20)
    listed: list[tuple[str, str]] = []
    got: list[str] = []

    def spy(name: str) -> Any:
        method = getattr(ObjectStore, name)

        async def counted(self: Any, prefix: str, *args: Any, **kwargs: Any) -> Any:
            (got if name == "get_buffer" else listed).append((name, prefix))
            return await method(self, prefix, *args, **kwargs)
        return counted

    for name in ("list", "list_md5", "list_with_md5", "get_buffer"):
        if hasattr(ObjectStore, name):  # (list_with_md5 is new: the test fails as it should)
            monkeypatch.setattr(ObjectStore, name, spy(name))
    summary = load_file(src, url, storage_options=storage_options, progress=False)
    assert summary.chunks_kept >= 20
    root_lists = [(name, key) for name, key in listed
                  if key.startswith("db/") and key.count("/") == 2]
    assert [name for name, _ in root_lists] == ["list_with_md5", "list"], listed
    assert len({key for _, key in root_lists}) == 1
    # the kept chunks' MD5s were listed: none of them fetched to compare
    assert not [key for _, key in got if key.startswith(root_lists[0][1])
                and not key.endswith(".json")], got
    assert_reads_as_h5py(url, storage_options, src)
