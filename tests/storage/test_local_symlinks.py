"""The file:// store never writes, overwrites, deletes, prunes or lists through a symlink
out of its bucket root: someone who can write the bucket directory (a shared project
directory) must not make an h5dask writer touch files elsewhere (its home, say).

Three kinds of attack: a symlink already in place (refused by the check of the key),
one swapped in right after the check (deterministic: a store whose check swaps a
directory for a symlink), and another process swapping a directory and a symlink
while the calls run. Each compares the outside directory before and after.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest

from h5dask.errors import InvalidKeyError
from h5dask.storage import local as local_module
from h5dask.storage import sync
from h5dask.storage.local import LocalObjectStore


def snapshot(top: Path) -> dict[str, bytes | str]:
    """Everything under ``top``, symlinks not followed: file -> bytes, dir -> "dir",
    symlink -> "-> target"."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(top).as_posix()
            if path.is_symlink():
                out[rel] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def temporaries(top: Path) -> list[str]:
    return [p.name for p in top.rglob(".tmp-*")]


@pytest.fixture
def bucket(tmp_path: Path) -> tuple[Path, Path]:
    """(bucket root holding db/victim, db/nested/, a directory outside it with secret,
    victim and nested/empty/); the attacker will make db a symlink to outside."""
    root, outside = tmp_path / "bucket", tmp_path / "outside"
    (root / "db" / "nested" / "empty").mkdir(parents=True)
    (root / "db" / "victim").write_bytes(b"inside")
    (outside / "nested" / "empty").mkdir(parents=True)
    (outside / "nested" / "deep-secret").write_bytes(b"deep secret")
    (outside / "secret").write_bytes(b"secret")
    (outside / "victim").write_bytes(b"victim")
    return root, outside


def swap_for_symlink(root: Path, outside: Path) -> None:
    """The attacker's move: db/ moved aside, a symlink to outside in its place."""
    os.rename(root / "db", root / "db.real")
    (root / "db").symlink_to(outside, target_is_directory=True)


# -- a symlink already in place: refused by the check ---------------------------------
OPERATIONS: dict[str, Callable[[LocalObjectStore], object]] = {
    "write": lambda s: sync(s.put("db/new", b"attack")),
    "overwrite": lambda s: sync(s.put("db/victim", b"attack")),
    "write deeper": lambda s: sync(s.put("db/nested/empty/new", b"attack")),
    "delete": lambda s: sync(s.delete("db/victim")),
    "prune": lambda s: sync(s.prune("db/nested/")),
    "list": lambda s: sync(s.list("db/")),
    "list_dir": lambda s: sync(s.list_dir("db/")),
    "list_modified": lambda s: sync(s.list_modified("db/")),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_symlinked_directory_out_of_the_root_is_refused(bucket, operation) -> None:
    root, outside = bucket
    swap_for_symlink(root, outside)
    before = snapshot(outside)
    with pytest.raises(InvalidKeyError, match="'db/.*' resolves outside"):
        OPERATIONS[operation](LocalObjectStore(str(root)))
    assert snapshot(outside) == before
    assert not temporaries(root) and not temporaries(outside)


def test_listings_skip_symlinks_without_an_error(bucket) -> None:
    """A listing of the root never descends into a symlinked directory nor reports a
    symlink (to a directory or a file, inside the root or out): no outside name leaks."""
    root, outside = bucket
    (root / "db" / "out").symlink_to(outside, target_is_directory=True)
    (root / "db" / "out-file").symlink_to(outside / "secret")
    (root / "db" / "alias").symlink_to(root / "db" / "victim")
    store = LocalObjectStore(str(root))
    assert sync(store.list("")) == ["db/victim"]
    assert sync(store.list_dir("db/")) == (["db/victim"], ["db/nested/"])
    assert list(sync(store.list_modified(""))) == ["db/victim"]
    # ... and reading a symlink out of the root is still refused, one inside still read
    with pytest.raises(InvalidKeyError, match="outside"):
        sync(store.get("db/out-file"))
    assert sync(store.get("db/alias")) == b"inside"


# -- a symlink as the object's own name: replaced or removed, never written through -------
@pytest.mark.parametrize("target", ["outside", "inside"])
def test_a_write_replaces_a_symlink_named_by_the_key(bucket, target) -> None:
    """As a PUT replaces a key: the symlink itself becomes the object, atomically (one
    rename); its target, in the root or out of it, is untouched."""
    root, outside = bucket
    linked = outside / "victim" if target == "outside" else root / "db" / "victim"
    (root / "db" / "link").symlink_to(linked)
    before = snapshot(outside), linked.read_bytes()
    store = LocalObjectStore(str(root))
    sync(store.put("db/link", b"object"))
    assert not (root / "db" / "link").is_symlink()
    assert (root / "db" / "link").read_bytes() == b"object"
    assert (snapshot(outside), linked.read_bytes()) == before
    assert sync(store.get("db/link")) == b"object"
    assert not temporaries(root)


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_a_delete_removes_a_symlink_named_by_the_key_not_its_target(bucket, target
                                                                      ) -> None:
    root, outside = bucket
    linked = outside / "victim" if target == "outside" else root / "db" / "victim"
    (root / "db" / "link").symlink_to(linked)
    before = snapshot(outside), linked.read_bytes()
    sync(LocalObjectStore(str(root)).delete("db/link"))
    assert not os.path.lexists(root / "db" / "link")
    assert (snapshot(outside), linked.read_bytes()) == before


def test_prune_does_not_recurse_through_a_symlink(bucket) -> None:
    root, outside = bucket
    (root / "db" / "nested" / "out").symlink_to(outside / "nested",
                                                 target_is_directory=True)
    before = snapshot(outside)
    sync(LocalObjectStore(str(root)).prune("db/nested/"))
    assert snapshot(outside) == before
    # the empty directory went; the one holding the symlink stays (it is not empty)
    assert sorted(os.listdir(root / "db" / "nested")) == ["out"]


# -- a symlink swapped in after the check (time of check to time of use) ----------------
class RacedStore(LocalObjectStore):
    """The attacker winning the race, deterministically: db/ becomes a symlink out of
    the root right after the key was checked."""

    outside: Path

    def _swap_after(self, checked):
        if not (self.root / "db").is_symlink():
            swap_for_symlink(self.root, self.outside)
        return checked

    def _resolved(self, path: Path, key: str) -> Path:  # every check of a key
        return self._swap_after(super()._resolved(path, key))

    def _path(self, key: str) -> Path:  # (what the check was called before)
        return self._swap_after(super()._path(key))


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused(bucket, operation
                                                                      ) -> None:
    root, outside = bucket
    store = RacedStore(str(root))
    store.outside = outside
    before_outside, before_inside = snapshot(outside), snapshot(root / "db")
    with pytest.raises(InvalidKeyError, match="'db/.*' of .*'db' became a symlink"):
        OPERATIONS[operation](store)
    assert (root / "db").is_symlink()  # the swap did happen
    assert snapshot(outside) == before_outside
    assert snapshot(root / "db.real") == before_inside  # nothing written, no temporary


#: swaps two names atomically, as fast as it can: Linux's renameat2(RENAME_EXCHANGE)
ATTACKER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = (name.encode() for name in sys.argv[1:3])
print("swapping", flush=True)
while True:
    libc.renameat2(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE
"""


def exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, bytes(a), -100, bytes(b), 2) != 0:
        raise OSError(ctypes.get_errno(), "renameat2", str(a))


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "renameat2"),
                    reason="needs Linux's renameat2 to swap a directory and a symlink")
def test_calls_racing_a_symlink_swap_stay_in_the_root(bucket) -> None:
    """Another process swaps db/ and a symlink out of the root over and over (each swap
    atomic, so db/ is always one or the other) while writes, overwrites, deletes,
    prunes and listings run: nothing outside ever changes, no listing names anything
    from outside, and the only failures are refusals. (Before the calls went through
    descriptors, writes and deletes reached outside within a few hundred calls.)"""
    root, outside = bucket
    (root / "db.swap").symlink_to(outside, target_is_directory=True)
    store = LocalObjectStore(str(root))
    before = snapshot(outside)
    calls: list[Callable[[], object]] = [
        lambda: sync(store.put("db/new", b"attack")),
        lambda: sync(store.put("db/victim", b"attack")),
        lambda: sync(store.put("db/nested/empty/new", b"attack")),
        lambda: sync(store.delete("db/nested/empty/new")),
        lambda: sync(store.prune("db/nested/")),
        lambda: sync(store.delete("db/victim")),
        lambda: listings.append(sync(store.list(""))),
        lambda: listings.append(sync(store.list_dir("db/"))[0]),
        lambda: listings.append(list(sync(store.list_modified("")))),
    ]
    listings: list[list[str]] = []
    refusals = 0
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, "db", "db.swap"],
                                cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout.readline() == "swapping\n"
        for i in range(900):
            try:
                calls[i % len(calls)]()
            except InvalidKeyError:
                refusals += 1
    finally:
        attacker.kill()
        attacker.wait(timeout=30)
    if (root / "db").is_symlink():
        exchange(root / "db", root / "db.swap")
    assert refusals > 0  # the race was on
    assert snapshot(outside) == before
    assert listings  # (db.swap/... is listed at times: it is db/ then, inside the root)
    leaked = {key for keys in listings for key in keys
              if key.rsplit("/", 1)[-1] in ("secret", "deep-secret")}
    assert not leaked
    assert not temporaries(outside)


# -- what still works ------------------------------------------------------------------
def test_a_root_that_is_a_symlink_is_its_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "real-bucket"
    real.mkdir()
    (tmp_path / "bucket").symlink_to(real, target_is_directory=True)
    store = LocalObjectStore(str(tmp_path / "bucket"))
    assert store.root == real.resolve()
    sync(store.put("db/a/b/obj", b"x"))
    sync(store.put("db/a/b/obj", b"y"))
    assert (real / "db" / "a" / "b" / "obj").read_bytes() == b"y"
    assert sync(store.get("db/a/b/obj")) == b"y"
    assert sync(store.list("")) == ["db/a/b/obj"]
    assert sync(store.list_dir("db/")) == ([], ["db/a/"])
    sync(store.delete("db/a/b/obj"))
    sync(store.prune("db/"))
    assert os.listdir(real) == []


def test_a_missing_root_is_made_by_the_first_write(tmp_path: Path) -> None:
    store = LocalObjectStore(str(tmp_path / "new" / "bucket"))
    assert sync(store.list("")) == [] and sync(store.get("x")) is None
    sync(store.delete("db/x"))
    sync(store.put("db/x", b"x"))
    assert (tmp_path / "new" / "bucket" / "db" / "x").read_bytes() == b"x"


def test_an_object_where_a_directory_is_needed_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalObjectStore(str(tmp_path))
    sync(store.put("db/a", b"x"))
    with pytest.raises(InvalidKeyError, match="'db/a/b' cannot be stored.*'a' is an object"):
        sync(store.put("db/a/b", b"y"))
    assert sync(store.get("db/a")) == b"x"


@pytest.mark.parametrize("write", ["put", "put_if_absent"])
def test_a_write_whose_new_directory_is_pruned_meanwhile_makes_it_again(
        tmp_path: Path, write: str) -> None:
    """A prune (``h5dask rm``, gc's after it collected a prefix) removes a directory a
    write has just made (it is still empty): the write makes it again rather than
    failing; also a conditional create (a lease taken on a prefix gc just pruned)."""

    class PrunedMeanwhile(LocalObjectStore):
        pruned = 0

        def _open_directory(self, key, path, *, create=False):
            directory = super()._open_directory(key, path, create=create)
            if create and not self.pruned:
                self.pruned += 1
                os.rmdir(path)
            return directory

    store = PrunedMeanwhile(str(tmp_path))
    assert sync(getattr(store, write)("db/r/x", b"x")) in (None, True)
    assert store.pruned == 1 and (tmp_path / "db" / "r" / "x").read_bytes() == b"x"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_the_bucket_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: one put where a chunk should be
    would hang every reader."""
    fifo = tmp_path / "db" / "chunk"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    store = LocalObjectStore(str(tmp_path))
    try:
        with pytest.raises(InvalidKeyError, match="'db/chunk' .* not a regular file"):
            sync(asyncio.wait_for(store.get("db/chunk"), timeout=20))
    finally:
        with suppress(OSError):  # a reader stuck in open() (the bug) is let go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert sync(store.list("")) == []  # not listed either


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "db" / "dir").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        sync(LocalObjectStore(str(tmp_path)).put("db/dir", b"x"))
    assert not temporaries(tmp_path)


@pytest.mark.parametrize("call", ["put", "delete"])
def test_a_directory_where_an_object_belongs_names_the_key(tmp_path: Path, call: str
                                                           ) -> None:
    """A directory where an object's file belongs: the error (still the IsADirectoryError
    callers catch) names the object key and its folder and says what to do, not the
    temporary file and the key's last part ('.tmp-...' -> '4')."""
    (tmp_path / "db" / "d" / "4" / "x").mkdir(parents=True)
    store = LocalObjectStore(str(tmp_path))
    args = ("db/d/4",) if call == "delete" else ("db/d/4", b"x")
    with pytest.raises(IsADirectoryError) as err:
        sync(getattr(store, call)(*args))
    message = str(err.value)
    assert f"object key 'db/d/4' of {tmp_path.as_uri()} cannot be" in message
    assert f"folder {tmp_path.as_uri()}/db/d " in message and ".tmp-" not in message
    assert ("remove it by hand" if call == "delete" else "move or remove that directory"
            ) in message
    assert (tmp_path / "db" / "d" / "4" / "x").is_dir() and not temporaries(tmp_path)


def test_a_chunk_write_onto_a_directory_names_the_chunk_key(tmp_path: Path) -> None:
    """The same through h5dask.File: a chunk's write names the chunk's whole key."""
    import h5dask

    url = (tmp_path / "bucket" / "home" / "w.h5").as_uri()
    with h5dask.File(url, "w") as f:
        d = f.create_dataset("x", shape=(8,), dtype="<i4", chunks=(2,))
        folder = d._meta.key.rpartition("/")[0]
        (f._session.store.root / folder / "2").mkdir(parents=True)
        with pytest.raises(IsADirectoryError, match=f"object key '{folder}/2' of "):
            d[4:6] = 1


def test_without_descriptor_relative_calls_the_store_still_works(tmp_path, monkeypatch
                                                                  ) -> None:
    """Where ``os`` calls take no directory descriptor (Windows) the store goes by path
    names, checked by resolving them (as before)."""
    monkeypatch.setattr(local_module, "_BENEATH", False)
    store = LocalObjectStore(str(tmp_path / "bucket"))
    sync(store.put("db/r/a", b"1"))
    sync(store.put("db/r/a", b"2"))
    sync(store.put("db/r/d/b", b"3"))
    assert sync(store.get("db/r/a")) == b"2" and sync(store.get("db/r/none")) is None
    assert sync(store.list("db/")) == ["db/r/a", "db/r/d/b"]
    assert sync(store.list_dir("db/r/")) == (["db/r/a"], ["db/r/d/"])
    assert sorted(sync(store.list_modified("db/"))) == ["db/r/a", "db/r/d/b"]
    sync(store.delete("db/r/d/b"))
    sync(store.prune("db/r/"))
    assert sync(store.list_dir("db/r/")) == (["db/r/a"], [])
    assert not temporaries(tmp_path)
