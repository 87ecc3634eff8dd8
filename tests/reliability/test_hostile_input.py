"""Hostile input: mutated metadata JSON and chunk bytes of a real domain, and object
keys / domain paths that try to leave the bucket root.

Every mutated domain is read whole (h5dask.File: every object, attribute and dataset,
and the xarray engine); the outcome must be the original data or a documented h5dask
error (an ``h5dask.H5DaskError`` subclass, which includes ``DomainNotFoundError``
(a FileNotFoundError) and ``ObjectNotFoundError`` (a KeyError)) within a few seconds,
never another exception, a hang or wrong values. The exceptions to "never wrong
values" are the ones the format cannot detect, and each is checked to be no more than
that (see CONCURRENCY.md, "What h5dask can and cannot detect"):

* a metadata change that is valid and changes the meaning (a dtype, a shape, a fill
  value, a link target, an attribute value): the data read follows the new metadata;
* bit flips in raw (uncompressed) chunks, and in the payload of chunks whose Blosc
  frame carries no checksum (lz4, zstd, blosclz, and blocks Blosc stored uncompressed);
* a deleted chunk reads as the fill value (a chunk never written).

CI runs a bounded number of examples (derandomized); the slow variants many more::

    ci/test.sh tests/reliability -m slow -k hostile
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_faults import record_figures

import h5dask
from h5dask.errors import CorruptChunkError, InvalidKeyError
from h5dask.format import ids
from h5dask.storage import open_location, sync
from h5dask.storage.local import LocalObjectStore

CI_EXAMPLES = 60
SLOW_EXAMPLES = 1500
EXAMPLE_TIMEOUT = 20.0  # seconds: more is a hang
TRIED: Counter[str] = Counter()  # mutated inputs tried, by kind (for the closing note)
OUTCOMES: Counter[str] = Counter()


class Hang(Exception):
    """An example took longer than EXAMPLE_TIMEOUT."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise Hang(f"no answer within {EXAMPLE_TIMEOUT} s")


# -- the real domain under attack --------------------------------------------------------
class Domain:
    """A small domain in memory with every kind of object, and its pristine objects."""

    def __init__(self) -> None:
        self.root = f"/hostile-{uuid.uuid4().hex[:8]}"
        self.url = f"memory://{self.root.lstrip('/')}/home/d.h5"
        self.options = {"bucket_root": self.root}
        with h5dask.File(self.url, "w", storage_options=self.options) as f:
            # gzip + shuffle: Blosc's zlib streams carry an adler32 checksum
            f.create_dataset("g/gz", data=np.arange(600.0).reshape(20, 30) / 7, chunks=(8, 16),
                             compression="gzip", shuffle=True, fillvalue=-1.0)
            f.create_dataset("raw", data=np.arange(250, dtype="<i4").reshape(25, 10),
                             chunks=(10, 10), fillvalue=-7)
            f.create_dataset("zs", data=np.linspace(0, 1, 16, dtype="f4"), chunks=(8,),
                             compression="zstd")
            f.create_dataset("s", data=np.array(["a", "bb", "ccc", "", "éé", "f"],
                                                dtype=object), chunks=(3,))
            f["scalar"] = np.int64(42)
            f["alias"] = h5dask.SoftLink("/raw")
            f["g"].attrs["title"] = "hostile"
            f["g"].attrs["arr"] = np.arange(3)
            f.attrs["x"] = 1.5
            f["g/gz"].attrs["units"] = "m"
        self.location = open_location(self.url, self.options)
        self.store = self.location.store
        keys = sync(self.store.list(""))
        self.objects = dict(zip(keys, sync(self.store.get_many(keys, kind="other"))))
        self.names: dict[str, str] = {}  # object id -> path
        self.datasets: dict[str, Any] = {}  # path -> dataset facts
        with h5dask.File(self.url, storage_options=self.options) as f:
            self.root_id = f.id
            self.names[f.id] = "/"

            def visit(name: str, obj: Any) -> None:
                self.names[obj.id] = name
                if isinstance(obj, h5dask.Dataset):
                    self.datasets[name] = {"id": obj.id, "chunks": obj.chunks or (1,),
                                           "compression": obj.compression,
                                           "fill": obj.fillvalue, "shape": obj.shape}

            f.visititems(visit)
        self.expected = read_everything(self.url, self.options)
        self.expected_xr = xr.open_dataset(self.url, engine="h5cloud", decode_cf=False,
                                           storage_options=self.options).load()
        self.metadata_keys = sorted(k for k in self.objects if k.endswith(".json"))
        self.chunk_keys = sorted(k for k in self.objects if not k.endswith(".json"))

    def dataset_of_chunk(self, key: str) -> str:
        for name, facts in self.datasets.items():
            if key.startswith(ids.object_prefix(facts["id"]) + "/"):
                return name
        raise AssertionError(key)

    def object_of_key(self, key: str) -> str | None:
        """The path of the object whose metadata is ``key`` (None: .domain.json)."""
        for obj_id, name in self.names.items():
            if ids.object_key(obj_id) == key:
                return name
        return None

    def put(self, key: str, data: bytes | None) -> None:
        if data is None:
            sync(self.store.delete(key))
        else:
            sync(self.store.put(key, data, kind="other"))

    def restore(self, key: str) -> None:
        self.put(key, self.objects[key])


@pytest.fixture(scope="module")
def domain() -> Iterator[Domain]:
    d = Domain()
    yield d
    record_figures("hostile", {"tried": dict(TRIED), "outcomes": dict(OUTCOMES)})


# -- reading everything ----------------------------------------------------------------
def _attrs(obj: Any) -> dict:
    return {k: _plain(obj.attrs[k]) for k in obj.attrs}


def _plain(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        return [_plain(v) if isinstance(v, np.ndarray) else v for v in arr.reshape(-1)]
    return arr.tolist()


def read_dataset(ds: Any) -> Any:
    """All of a dataset's values, bounded: huge claimed sizes read one element."""
    shape = ds.shape
    if shape is None:
        return None
    if shape == ():
        return _plain(ds[()])
    chunk_bytes = int(np.prod(ds.chunks or shape, dtype=object)) * max(1, ds.dtype.itemsize)
    if chunk_bytes > 64 * 2**20:
        return ("not read", shape)  # a claimed chunk of > 64 MiB: skip reading in a test
    if int(np.prod(shape, dtype=object)) > 10**6:
        return _plain(ds[tuple(slice(0, 1) for _ in shape)])
    return _plain(ds[...])


def read_everything(url: str, options: dict) -> dict:
    out: dict[str, Any] = {}
    with h5dask.File(url, storage_options=options) as f:
        out["/"] = {"attrs": _attrs(f)}

        def visit(name: str, obj: Any) -> None:
            entry: dict[str, Any] = {"attrs": _attrs(obj), "kind": type(obj).__name__}
            if isinstance(obj, h5dask.Dataset):
                entry["dtype"] = str(obj.dtype)
                entry["values"] = read_dataset(obj)
            out[name] = entry

        f.visititems(visit)
        if "alias" in f:
            out["alias (soft link)"] = read_dataset(f["alias"])
    return out


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True,
                                                                     default=repr)


ALLOWED = (h5dask.H5DaskError, FileNotFoundError)


def attempt(domain: Domain) -> tuple[str, Any]:
    """Read everything (File and xarray); ("ok", data) or ("error", exception)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, EXAMPLE_TIMEOUT)
    try:
        data = read_everything(domain.url, domain.options)
        view = xr.open_dataset(domain.url, engine="h5cloud", decode_cf=False,
                               storage_options=domain.options)
        small = all(v.size <= 10**6 for v in view.variables.values())
        return "ok", (data, view.load() if small else None)
    except ALLOWED as exc:
        return "error", exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def differing(expected: dict, got: dict) -> set[str]:
    names = set(expected) | set(got)
    return {n for n in names if not same(expected.get(n), got.get(n))}


# -- metadata mutations ------------------------------------------------------------------
def json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            paths += json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            paths += json_paths(v, (*prefix, i))
    return paths


def get_path(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def set_path(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = get_path(obj, path[:-1])
    parent[path[-1]] = value
    return obj


def del_path(obj: Any, path: tuple) -> Any:
    if not path:
        return {}
    parent = get_path(obj, path[:-1])
    del parent[path[-1]]
    return obj


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["H5T_FLOAT", "H5T_STD_I32LE", "H5T_IEEE_F64LE", "H5S_SIMPLE",
                       "H5D_CHUNKED", "H5D_CONTIGUOUS", "H5D_CHUNKED_REF", "H5L_TYPE_SOFT",
                       "H5L_TYPE_HARD", "H5L_TYPE_EXTERNAL", "H5T_STRING", "H5T_COMPOUND",
                       "H5T_VLEN", "H5T_ARRAY", "H5T_REFERENCE", "H5T_ENUM", "../../..",
                       "g-00000000-00000000-0000-000000-000000", "/etc/passwd", "", "\x00"])
    | st.sampled_from([0, -1, 1, 2**31, 2**63, 10**12]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["class", "base", "dims", "maxdims", "id", "value", "shape", "type",
                         "length", "charSet", "strPad", "fields", "name", "size"])
        | st.text(max_size=6), children, max_size=4),
    max_leaves=8,
)


def retype(value: Any) -> Any:
    """The same value as another JSON type."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return dict(enumerate(value)) if value else None
    if isinstance(value, dict):
        return list(value.values())
    return 0


@st.composite
def metadata_mutation(draw: Any, domain: Domain) -> tuple[str, bytes, str, tuple]:
    key = draw(st.sampled_from(domain.metadata_keys))
    original = json.loads(domain.objects[key])
    how = draw(st.sampled_from(["delete", "replace", "retype", "truncate", "garbage"]))
    if how == "truncate":
        raw = domain.objects[key]
        return key, raw[: draw(st.integers(0, len(raw) - 1))], how, ()
    if how == "garbage":
        return key, draw(st.binary(max_size=64)), how, ()
    path = draw(st.sampled_from(json_paths(original)))
    obj = json.loads(domain.objects[key])
    if how == "delete":
        obj = del_path(obj, path)
    elif how == "replace":
        obj = set_path(obj, path, draw(json_values))
    else:
        obj = set_path(obj, path, retype(get_path(obj, path)))
    return key, json.dumps(obj, allow_nan=True).encode(), how, path


SEMANTIC = ("type", "shape", "layout", "creationProperties", "attributes", "links", "root",
            "value")


def may_differ(domain: Domain, key: str, how: str, path: tuple) -> set[str] | None:
    """Names whose read may legitimately differ after a metadata mutation (None: any)."""
    if how in ("truncate", "garbage"):
        return set()  # must be an error (or, for unused objects, no change)
    name = domain.object_of_key(key)
    if name is None:  # .domain.json: a changed root may point anywhere
        return None if path[:1] in ((), ("root",)) else set()
    if not path or path[0] not in SEMANTIC:
        return set()
    if path[0] == "links" or name == "/":
        return None  # links re-point names; the root group's attributes are "/"
    out = {name}
    if name == "raw":
        out.add("alias (soft link)")
    return out


def check_metadata_outcome(domain: Domain, key: str, how: str, path: tuple) -> str:
    result, value = attempt(domain)
    if result == "error":
        return type(value).__name__
    data, view = value
    changed = differing(domain.expected, data)
    allowed = may_differ(domain, key, how, path)
    if allowed is not None:
        assert changed <= allowed, (
            f"wrong values for {sorted(changed - allowed)} after {how} of {path} in {key}")
        if not changed and view is not None and how not in ("replace", "retype"):
            xr.testing.assert_identical(view, domain.expected_xr)
    return "correct data" if not changed else "changed as the metadata says"


def run_metadata_example(domain: Domain, mutation: tuple) -> None:
    key, data, how, path = mutation
    TRIED[f"metadata:{how}"] += 1
    domain.put(key, data)
    try:
        OUTCOMES[f"metadata:{check_metadata_outcome(domain, key, how, path)}"] += 1
    finally:
        domain.restore(key)


# -- chunk mutations ---------------------------------------------------------------------
@st.composite
def chunk_mutation(draw: Any, domain: Domain) -> tuple[str, bytes | None, str]:
    key = draw(st.sampled_from(domain.chunk_keys))
    raw = domain.objects[key]
    how = draw(st.sampled_from(["flip", "flip", "truncate", "extend", "delete"]))
    if how == "flip":
        bit = draw(st.integers(0, len(raw) * 8 - 1))
        b = bytearray(raw)
        b[bit // 8] ^= 1 << (bit % 8)
        return key, bytes(b), how
    if how == "truncate":
        return key, raw[: draw(st.integers(0, len(raw) - 1))], how
    if how == "extend":
        return key, raw + draw(st.binary(min_size=1, max_size=64)), how
    return key, None, how


def zlib_checksummed(frame: bytes, compression: str | None) -> bool:
    """A gzip chunk whose Blosc frame really holds zlib streams (each with an adler32),
    not blocks Blosc stored verbatim because they did not compress (flag 0x02)."""
    return compression == "gzip" and len(frame) >= 16 and not frame[2] & 0x02


def chunk_region(domain: Domain, name: str, key: str) -> tuple[slice, ...]:
    facts = domain.datasets[name]
    index = tuple(int(i) for i in key.rsplit("/", 1)[1].split("_"))
    return tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, facts["chunks"]))


def check_chunk_outcome(domain: Domain, key: str, data: bytes | None, how: str) -> str:
    name = domain.dataset_of_chunk(key)
    facts = domain.datasets[name]
    result, value = attempt(domain)
    compressed = facts["compression"] is not None
    if result == "error":
        assert isinstance(value, CorruptChunkError), value  # only the chunk is bad
        assert key in str(value)
        return "CorruptChunkError"
    got, _view = value
    changed = differing(domain.expected, got)
    if not changed:
        return "correct data"
    readers = {name} | ({"alias (soft link)"} if name == "raw" else set())
    assert changed <= readers, changed
    if how == "delete":  # a chunk never written: the fill value, there only
        expected = np.array(domain.expected[name]["values"], dtype=object)
        fill = _plain(facts["fill"]) if facts["fill"] is not None else 0
        region = chunk_region(domain, name, key) if facts["shape"] else ()
        expected[region] = fill if name != "s" else b""  # bytes, as h5py
        assert same(expected.tolist(), got[name]["values"]), (name, key)
        return "fill value (chunk deleted)"
    # what the format cannot detect: a flip in raw bytes, or in an unchecksummed frame
    assert how == "flip", f"{how} of {key} gave wrong values instead of CorruptChunkError"
    assert not zlib_checksummed(domain.objects[key], facts["compression"]), (
        f"flip in zlib-compressed chunk {key} gave wrong values")
    if not compressed and name != "s":
        # one flipped bit in raw bytes changes exactly one element
        exp = np.asarray(domain.expected[name]["values"])
        assert int(np.sum(exp != np.asarray(got[name]["values"]))) == 1
    return "undetectable flip (documented)"


def run_chunk_example(domain: Domain, mutation: tuple) -> None:
    key, data, how = mutation
    TRIED[f"chunk:{how}"] += 1
    domain.put(key, data)
    try:
        OUTCOMES[f"chunk:{check_chunk_outcome(domain, key, data, how)}"] += 1
    finally:
        domain.restore(key)


# -- the property tests (CI: bounded and derandomized; slow: many more) --------------------
COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck),
          "database": None}


@settings(max_examples=CI_EXAMPLES, derandomize=True, **COMMON)
@given(data=st.data())
def test_mutated_metadata(domain: Domain, data: Any) -> None:
    run_metadata_example(domain, data.draw(metadata_mutation(domain)))


@settings(max_examples=CI_EXAMPLES, derandomize=True, **COMMON)
@given(data=st.data())
def test_mutated_chunks(domain: Domain, data: Any) -> None:
    run_chunk_example(domain, data.draw(chunk_mutation(domain)))


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **COMMON)
@given(data=st.data())
def test_mutated_metadata_slow(domain: Domain, data: Any) -> None:
    run_metadata_example(domain, data.draw(metadata_mutation(domain)))


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **COMMON)
@given(data=st.data())
def test_mutated_chunks_slow(domain: Domain, data: Any) -> None:
    run_chunk_example(domain, data.draw(chunk_mutation(domain)))


def test_every_size_change_of_every_chunk_is_detected(domain: Domain) -> None:
    """Deterministic sweep: each chunk cut short by 1 byte, cut in half, emptied, or
    given 1 or 100 extra bytes raises CorruptChunkError (except cuts to a clipped edge
    chunk's exact size, which is how HSDS may store edge chunks: then it reads right)."""
    for key in domain.chunk_keys:
        raw = domain.objects[key]
        for data, how in ((raw[:-1], "truncate"), (raw[: len(raw) // 2], "truncate"),
                          (b"", "truncate"), (raw + b"\0", "extend"),
                          (raw + os.urandom(100), "extend")):
            TRIED[f"chunk:{how} (sweep)"] += 1
            domain.put(key, data)
            try:
                outcome = check_chunk_outcome(domain, key, data, how)
            finally:
                domain.restore(key)
            name = domain.dataset_of_chunk(key)
            facts = domain.datasets[name]
            region = chunk_region(domain, name, key)
            clipped = int(np.prod([min(r.stop, n) - r.start
                                   for r, n in zip(region, facts["shape"])]))
            if name == "s":  # a vlen chunk: extra bytes after the last string are ignored
                assert outcome in ("CorruptChunkError", "correct data"), (key, how)
            elif (facts["compression"] is None and outcome == "correct data"
                  and len(data) == clipped * np.dtype("<i4").itemsize):
                pass  # a raw edge chunk stored clipped, as HSDS may store it: still right
            else:
                assert outcome == "CorruptChunkError", (key, how, len(data))


def flip_sweep(domain: Domain, every: int) -> None:
    """Single-bit flips of one gzip (+shuffle) chunk: every bit of the Blosc header and
    block offsets, and every ``every``-th bit after them, raise CorruptChunkError or read
    the right values (flips in unused header bits)."""
    key = next(k for k in domain.chunk_keys if domain.dataset_of_chunk(k) == "g/gz")
    raw = domain.objects[key]
    assert zlib_checksummed(raw, "gzip")
    bits = sorted(set(range(32 * 8)) | set(range(0, len(raw) * 8, every)))
    outcomes: Counter[str] = Counter()
    for bit in bits:
        b = bytearray(raw)
        b[bit // 8] ^= 1 << (bit % 8)
        domain.put(key, bytes(b))
        try:
            outcomes[check_chunk_outcome(domain, key, bytes(b), "flip")] += 1
        finally:
            domain.restore(key)
    TRIED["chunk:flip (sweep, zlib)"] += len(bits)
    assert set(outcomes) <= {"CorruptChunkError", "correct data"}, outcomes
    assert outcomes["CorruptChunkError"] > 0.8 * len(bits)


def test_bit_flips_of_a_zlib_chunk_are_detected(domain: Domain) -> None:
    flip_sweep(domain, every=29)


@pytest.mark.slow
def test_every_bit_flip_of_a_zlib_chunk_is_detected_slow(domain: Domain) -> None:
    flip_sweep(domain, every=1)


# -- keys and paths that try to leave the bucket root -------------------------------------
HOSTILE_SEGMENTS = ["..", ".", "", "../..", "/", "//", "\\..\\", "..\\..", "%2e%2e", "~",
                    "\x00", "a\nb", "a\tb", "?", "#", "é", " ", "a b", "..%2f", "%00",
                    "con", "x" * 300]

path_text = st.lists(st.sampled_from(HOSTILE_SEGMENTS) | st.text(max_size=8), min_size=1,
                     max_size=5).map("/".join)


def snapshot(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, LocalObjectStore]:
    """``tmp_path/outside`` (must never change) beside the bucket root ``tmp_path/root``."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    (tmp_path / "root" / "db").mkdir(parents=True)
    return tmp_path, LocalObjectStore(str(tmp_path / "root"))


@settings(max_examples=300, derandomize=True, **COMMON)
@given(key=path_text | st.sampled_from(["../outside/secret", "/etc/passwd", "db/../../outside",
                                        "db/x/../../../outside/secret", "..", "a/./b"]))
def test_object_keys_never_leave_the_bucket_root(sandbox: Any, key: str) -> None:
    base, store = sandbox
    TRIED["hostile key"] += 1
    before = snapshot(base / "outside")
    try:
        sync(store.put(key, b"x", kind="other"))
    except (InvalidKeyError, ValueError, OSError):
        OUTCOMES["hostile key: refused"] += 1
        return
    finally:
        assert snapshot(base / "outside") == before
    # accepted: it is inside the root, and reads back from there
    path = (base / "root" / key).resolve()
    assert (base / "root").resolve() in path.parents
    assert sync(store.get(key, kind="other")) == b"x"
    OUTCOMES["hostile key: stored inside the root"] += 1


def test_symlink_out_of_the_root_is_refused(sandbox: Any) -> None:
    base, store = sandbox
    (base / "root" / "db" / "link").symlink_to(base / "outside")
    with pytest.raises(InvalidKeyError):
        sync(store.get("db/link/secret", kind="other"))
    with pytest.raises(InvalidKeyError):
        sync(store.put("db/link/new", b"x", kind="other"))
    assert not (base / "outside" / "new").exists()


@settings(max_examples=200, derandomize=True, **COMMON)
@given(path=path_text, scheme=st.sampled_from(["file", "s3", "memory"]))
def test_domain_urls_never_leave_the_bucket_root(tmp_path_factory: Any, path: str,
                                                 scheme: str) -> None:
    """open_location either refuses the URL or gives a domain path that is a clean key
    (no '.', '..', empty segments, backslashes, NUL or control characters) and, for
    file://, lies inside the bucket root."""
    TRIED["hostile domain URL"] += 1
    root = tmp_path_factory.getbasetemp() / "urls" / "root"
    (root / "db").mkdir(parents=True, exist_ok=True)
    if scheme == "file":
        url, options = f"file://{root}/{path}", {"bucket_root": str(root)}
    elif scheme == "s3":
        url, options = f"s3://bucket/{path}", {"anon": True}
    else:
        url, options = f"memory://bucket/{path}", {"bucket_root": "/bucket"}
    try:
        loc = open_location(url, options)
    except (ValueError, InvalidKeyError):
        OUTCOMES["hostile domain URL: refused"] += 1
        return
    segments = loc.domain.split("/")
    assert all(s not in ("", ".", "..") for s in segments), loc.domain
    assert not any(c in loc.domain for c in "\\\x00") and loc.domain.isprintable()
    if scheme == "file":
        assert isinstance(loc.store, LocalObjectStore)
        target = (loc.store.root / loc.domain).resolve()
        assert target == root.resolve() or root.resolve() in target.parents
    OUTCOMES["hostile domain URL: accepted, inside the root"] += 1


@pytest.mark.parametrize("url", [
    "s3://bucket/home/a?b.h5", "s3://bucket/home/a#b.h5", "s3://bucket/home/a\nb.h5",
    "s3://bucket/home/a\tb.h5", "memory://bucket/home/a?versionId=1",
])
def test_domain_urls_are_not_silently_changed(url: str) -> None:
    """'?', '#' and control characters would make the URL name another domain (urlsplit
    drops them or what follows): refused, not silently written elsewhere."""
    with pytest.raises(ValueError):
        open_location(url, {"anon": True} if url.startswith("s3") else {})


def test_external_link_out_of_the_bucket_is_refused(sandbox: Any) -> None:
    base, _store = sandbox
    url = (base / "root" / "home" / "d.h5").as_uri()
    options = {"bucket_root": str(base / "root")}
    with h5dask.File(url, "w", storage_options=options) as f:
        f["ext"] = h5dask.ExternalLink("../../outside/secret", "/x")
        f["ext2"] = h5dask.ExternalLink("/../../outside", "/x")
    with h5dask.File(url, storage_options=options) as f:
        for name in ("ext", "ext2"):
            with pytest.raises(h5dask.H5DaskError):
                f[name]


@settings(max_examples=100, derandomize=True, **COMMON)
@given(obj_id=st.text(max_size=60) | st.sampled_from([
    "g-../../../../etc", "d-00000000-00000000-0000-000000-00000/../..", "g-" + "0" * 31,
    "t-\x00", "d-deadbeef-deadbeef-dead-beefde-adbeef/x"]))
def test_object_ids_in_links_never_leave_the_bucket_root(sandbox: Any, obj_id: str) -> None:
    """A group link whose id is a path is refused as invalid metadata, never followed."""
    base, _store = sandbox
    TRIED["hostile object id"] += 1
    url = (base / "root" / "home" / f"ids-{uuid.uuid4().hex[:6]}.h5").as_uri()
    options = {"bucket_root": str(base / "root")}
    with h5dask.File(url, "w", storage_options=options) as f:
        f.create_group("g")
        root_key = ids.object_key(f.id)
    path = base / "root" / root_key
    group = json.loads(path.read_text())
    group["links"]["g"]["id"] = obj_id
    path.write_text(json.dumps(group))
    before = snapshot(base / "outside")
    try:
        with h5dask.File(url, storage_options=options) as f:
            f["g"]
        OUTCOMES["hostile object id: resolved inside the root"] += 1
    except ALLOWED:
        OUTCOMES["hostile object id: refused"] += 1
    assert snapshot(base / "outside") == before
