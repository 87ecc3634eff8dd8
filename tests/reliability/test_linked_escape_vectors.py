"""The linked-reference rule against an attacker's spellings (issue 10, item 1, red team).

:mod:`test_linked_escape` reads linked datasets end to end; this module feeds the rule
itself (:meth:`LinkPolicy.resolve`, no I/O) the URIs an attacker who writes a domain's
JSON would try against ``file://``, S3 and fsspec ``memory://`` domains: other spellings
of a scheme or host, encodings, white space, very long URIs, bucket names that look like
hosts. Each resolves to a key inside the domain's store, or is refused as outside it
(allowable) or as malformed (never read). Then the attacks that need more than a URI: a
symlink swapped in after the check (a race), and active-storage pushdown of a chunk
linked into a store with other credentials than the domain's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from h5dask.active.pushdown import chunk_credentials, chunk_request_body
from h5dask.chunkio import ArraySource, ChunkRef
from h5dask.errors import InvalidKeyError, LinkedReferenceRefused
from h5dask.format.filters import ChunkCodec
from h5dask.storage.fsspec_store import FsspecObjectStore
from h5dask.storage.links import ENV_VAR, MAX_URI_LENGTH, LinkPolicy
from h5dask.storage.local import LocalObjectStore
from h5dask.storage.s3 import S3ObjectStore
from h5dask.storage.s3_options import S3Settings

OUTSIDE, MALFORMED = "outside", "malformed"
ENDPOINT = "http://127.0.0.1:9"  # nothing listens: the rule makes no request


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A bucket root ``bucket`` next to ``bucket-secret``, with symlinks out of it."""
    root = tmp_path / "bucket"
    (root / "files").mkdir(parents=True)
    (root / "files" / "data.bin").write_bytes(b"inside")
    (tmp_path / "bucket-secret").mkdir()
    (tmp_path / "bucket-secret" / "s").write_bytes(b"secret")
    (root / "files" / "passwd").symlink_to("/etc/passwd")
    (root / "dirlink").symlink_to(tmp_path / "bucket-secret")
    return root


def resolve(store: object, uri: str, policy: LinkPolicy | None = None) -> str:
    """The key ``uri`` resolves to in ``store``, or OUTSIDE / MALFORMED."""
    try:
        return (policy or LinkPolicy()).resolve(uri, store, "dataset '/x'")[1]
    except LinkedReferenceRefused as exc:
        return MALFORMED if "not a valid object URL" in str(exc) else OUTSIDE


LONG = "a" * (MAX_URI_LENGTH + 1)

# (uri with {root} = the bucket root's path, expected key / OUTSIDE / MALFORMED)
FILE_VECTORS = [
    ("file://{root}/files/data.bin", "files/data.bin"),
    ("FILE://{root}/files/data.bin", "files/data.bin"),  # schemes are case-insensitive
    ("file:{root}/files/data.bin", "files/data.bin"),  # file:/path
    ("file://localhost{root}/files/data.bin", "files/data.bin"),
    ("file:/etc/passwd", OUTSIDE),
    ("FILE:///etc/passwd", OUTSIDE),
    ("file://LOCALHOST/etc/passwd", OUTSIDE),
    ("file://evil.example/etc/passwd", OUTSIDE),  # a host: not this machine's file
    ("file://[::1]/etc/passwd", OUTSIDE),
    ("file://127.0.0.1/etc/passwd", OUTSIDE),
    ("//etc/passwd", OUTSIDE),
    ("~/.aws/credentials", OUTSIDE),  # no ~ expansion: HSDS's bucket/key form, bucket '~'
    ("bucket-secret/s", OUTSIDE),  # a partial segment of the root's name
    ("file://bucket-secret/s", OUTSIDE),
    ("file://{root}-secret/s", OUTSIDE),
    ("file://{root}/files/passwd", OUTSIDE),  # a symlink out of the root
    ("file://{root}/dirlink/s", OUTSIDE),  # a directory symlink out of the root
    ("bucket/dirlink/s", OUTSIDE),
    ("file://{root}/%252e%252e/bucket-secret/s", "%2e%2e/bucket-secret/s"),  # decoded once
    ("file://{root}/%66iles/data.bin", "files/data.bin"),  # %66 is 'f'
    ("file://bu%63ket/files/data.bin", OUTSIDE),  # hosts are not decoded
    ("file://{root}/\ufb01les/data.bin", "\ufb01les/data.bin"),  # no NFKC: 'ﬁ' is not 'fi'
    ("file://{root}%2F..%2Fbucket-secret/s", MALFORMED),
    ("file://{root}/files/data.bin%00", MALFORMED),
    ("file://{root}/files/data.bin\x00", MALFORMED),
    ("file://{root}/files\\..\\..\\bucket-secret\\s", MALFORMED),
    (" file://{root}/files/data.bin", MALFORMED),  # urlsplit drops the blank, others not
    ("file://{root}/files/data.bin ", MALFORMED),
    ("file://{root}/files/" + LONG, MALFORMED),
    ("file://{root}/files/" + "b" * 300, MALFORMED),  # a name longer than NAME_MAX
    ("file:////etc/passwd", MALFORMED),
    ("file:", MALFORMED),
]


@pytest.mark.parametrize(("uri", "expected"), FILE_VECTORS)
def test_file_domain_vectors(uri: str, expected: str, root: Path) -> None:
    assert resolve(LocalObjectStore(str(root)), uri.format(root=root)) == expected


S3_VECTORS = [
    ("S3://other/x.h5", "x.h5"),  # any bucket of the same endpoint, whatever the case
    ("s3a://other/x.h5", "x.h5"),
    ("s3://a.b.example.com/x.h5", "x.h5"),  # dots: a bucket name, still this endpoint
    ("s3://169.254.169.254/latest", "latest"),  # path style: a bucket, not a host
    ("s3://bucket/%252e%252e/x.h5", "%252e%252e/x.h5"),  # a key, not a path to walk
    ("s3:/other/x.h5", MALFORMED),
    ("s3:other/x.h5", MALFORMED),
    ("s3://user@evil.example/x.h5", MALFORMED),
    ("s3://evil.example:80/x.h5", MALFORMED),
    ("s3://[::1]/x.h5", MALFORMED),
    ("s3://bucket%2Fother/x.h5", MALFORMED),
    ("s3://\uff42ucket/x.h5", MALFORMED),  # a full-width letter
    ("s3://bucket\u200b/x.h5", MALFORMED),  # a zero-width space
    ("s3://bucket/a%2f..%2f..%2fb", MALFORMED),
    ("s3://bucket/" + LONG, MALFORMED),
    (" s3://bucket/x.h5", MALFORMED),
    ("file:///home/user/.aws/credentials", OUTSIDE),
    ("/home/user/.aws/credentials", OUTSIDE),
    ("gs://bucket/x.h5", OUTSIDE),
]


@pytest.mark.parametrize(("uri", "expected"), S3_VECTORS)
def test_s3_domain_vectors(uri: str, expected: str) -> None:
    store = S3ObjectStore("bucket", S3Settings(endpoint=ENDPOINT, key="k", secret="s"))
    assert resolve(store, uri) == expected


MEMORY_VECTORS = [
    ("memory://bucket/x.h5", "x.h5"),
    ("memory://bucket/%252e%252e/x.h5", "%252e%252e/x.h5"),
    ("MEMORY://bucket/x.h5", OUTSIDE),  # not under the root as fsspec spells it: refused
    ("memory://bucket-secret/x.h5", OUTSIDE),
    ("bucket/x.h5", OUTSIDE),
    ("file:///etc/passwd", OUTSIDE),
    ("memory:///bucket/x.h5", MALFORMED),
    ("memory:/bucket/x.h5", MALFORMED),
    ("memory://x/../bucket/y", MALFORMED),
    ("memory://bucket/a%2F..%2F..%2Fsecret", MALFORMED),
]


@pytest.mark.parametrize(("uri", "expected"), MEMORY_VECTORS)
def test_fsspec_domain_vectors(uri: str, expected: str) -> None:
    assert resolve(FsspecObjectStore("memory", "/bucket"), uri) == expected


# -- the allow-list: what an entry allows, how the environment variable is read ---------
@pytest.mark.parametrize(("prefix", "uri", "allowed"), [
    ("file:///data", "file:///data-secret/x.h5", False),  # whole segments only
    ("file:///data/", "file:///data/x.h5", True),
    ("FILE:///data/", "file:///data/x.h5", True),
    ("s3://pub", "s3://public/x.h5", False),
    ("s3://pub/", "s3a://pub/x.h5", True),
    ("s3://pub/", "S3://pub/x.h5", True),
    ("s3://Pub/", "s3://pub/x.h5", False),  # bucket names are not folded
    ("https://host/files", "https://host@evil.example/files/x.h5", False),
    ("https://host/files", "https://host.evil.example/files/x.h5", False),
    ("https://host/files", "https://host:8443/files/x.h5", False),
    ("https://host/files", "HTTPS://HOST/files/x.h5", True),
    ("https://host/files", "https://host/files/%252e%252e/x.h5", True),  # literal, not ..
    ("https://host/files", "https://host/files/..%2fx.h5", False),  # malformed
    ("https://[::1]/files", "https://[::1]/files/x.h5", True),
    ("https://[::1]/files", "https://[::2]/files/x.h5", False),
])
def test_allow_list_entries_match_canonical_urls(prefix: str, uri: str, allowed: bool) -> None:
    store = LocalObjectStore("/nonexistent-root")
    result = resolve(store, uri, LinkPolicy.from_option([prefix]))
    assert (result not in (OUTSIDE, MALFORMED)) == allowed


def test_a_symlinked_allow_list_entry_means_its_real_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    policy = LinkPolicy.from_option([(tmp_path / "alias").as_uri()])
    store = LocalObjectStore(str(tmp_path / "root"))
    assert resolve(store, (tmp_path / "real" / "x.h5").as_uri(), policy) == "x.h5"
    assert resolve(store, (tmp_path / "alias" / "x.h5").as_uri(), policy) == "x.h5"
    assert resolve(store, (tmp_path / "other" / "x.h5").as_uri(), policy) == OUTSIDE


@pytest.mark.parametrize(("value", "prefixes"), [
    ("", ()), (" , ,", ()), (" file:///data/ ,, s3://a/", ("file:///data/", "s3://a/")),
])
def test_environment_variable_entries(value: str, prefixes: tuple) -> None:
    assert LinkPolicy.from_option(None, environ={ENV_VAR: value}).allowed_prefixes == prefixes


@pytest.mark.parametrize("value", ["/", "/data/", "data/", "file:///data/, /etc"])
def test_entries_must_be_urls_with_a_scheme(value: str) -> None:
    """A bare path is not a URL prefix (and ``$DATA/`` with DATA unset is ``/``)."""
    with pytest.raises(ValueError, match=f"{ENV_VAR}.*not a URL prefix with a scheme"):
        LinkPolicy.from_option(None, environ={ENV_VAR: value})


@pytest.mark.parametrize("prefix", ["file:///", "file://", "FILE:///", "file://localhost/",
                                    "file:///.root-alias"])
def test_the_whole_local_file_system_is_not_an_entry(prefix: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``file://$DIR/`` with DIR unset, or a symlink to ``/``: every local file, the
    reader's credentials included. Refused; name directories."""
    if prefix == "file:///.root-alias":
        (tmp_path / "root-alias").symlink_to("/")
        prefix = (tmp_path / "root-alias").as_uri()
    with pytest.raises(ValueError, match="would allow every local file"):
        LinkPolicy.from_option([prefix])
    monkeypatch.setenv(ENV_VAR, prefix)
    with pytest.raises(ValueError, match=ENV_VAR):
        LinkPolicy.from_option()


# -- a symlink swapped in after the check (time of check to time of use) ----------------
class RacedStore(LocalObjectStore):
    """A store whose file is replaced by a symlink out of the root right after the path
    was checked: the attacker winning the race, deterministically."""

    target: Path

    def _path(self, key: str) -> Path:
        path = super()._path(key)
        swap = path.with_name(".swap")
        swap.symlink_to(self.target)
        os.replace(swap, path)
        return path


def test_a_symlink_swapped_in_after_the_check_is_not_followed(root: Path) -> None:
    store = RacedStore(str(root))
    store.target = root.parent / "bucket-secret" / "s"
    assert store.locate((root / "files" / "data.bin").as_uri()) == (store, "files/data.bin")
    with pytest.raises(InvalidKeyError, match="became a symlink"):
        store._read("files/data.bin", (0, 6))


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(root: Path
                                                                          ) -> None:
    class RacedDirectory(LocalObjectStore):
        def _path(self, key: str) -> Path:
            path = super()._path(key)
            os.rename(root / "files", root / "files.old")
            (root / "files").symlink_to(root.parent / "bucket-secret")
            (root.parent / "bucket-secret" / "data.bin").write_bytes(b"secret")
            return path

    # not followed, and not "missing" either (a chunk would read as fill values)
    with pytest.raises(InvalidKeyError, match="'files/data.bin'.*'files' became a symlink"):
        RacedDirectory(str(root))._read("files/data.bin", None)


def test_symlinks_inside_the_root_are_still_read(root: Path) -> None:
    (root / "alias.bin").symlink_to(root / "files" / "data.bin")
    assert LocalObjectStore(str(root))._read("alias.bin", None) == b"inside"


# -- active-storage pushdown of linked chunks --------------------------------------------
def linked_source(domain: S3ObjectStore, linked: S3ObjectStore, key: str) -> ArraySource:
    dtype = np.dtype("<f8")
    return ArraySource(domain, "d-0123abcd-4567ef01-0000-000000-000001", (4,), (4,), dtype,
                       ChunkCodec(dtype, (4,)), 0.0,
                       linked=(("0", ChunkRef(linked, key, 0, 32)),))


def test_pushdown_sends_the_credentials_of_the_store_holding_the_chunk() -> None:
    """A chunk linked into an allowed store opened with other settings (here an anonymous
    public endpoint) must not be requested with the domain's keys."""
    domain = S3ObjectStore("private", S3Settings(endpoint=ENDPOINT, key="K", secret="S"))
    public = S3ObjectStore("public", S3Settings(endpoint="http://127.0.0.2:9", anon=True))
    source = linked_source(domain, public, "x.h5")
    body = chunk_request_body(source, (0,), (slice(0, 4, 1),), (0,), (), skip_nan=False)
    assert body["url"] == "http://127.0.0.2:9/public/x.h5"
    assert chunk_credentials(source, (0,)) is None
    same = linked_source(domain, domain.sibling("other"), "x.h5")
    assert chunk_credentials(same, (0,)) == ("K", "S")  # same endpoint: the domain's keys


def test_pushdown_asks_the_server_for_the_key_the_client_reads() -> None:
    """The server unquotes the URL's path: a linked key with '%' or ' ' must be
    quoted, or the server reduces another object than the client would read."""
    domain = S3ObjectStore("bucket", S3Settings(endpoint=ENDPOINT, key="K", secret="S"))
    source = linked_source(domain, domain, "run 1/100%/x.h5")
    body = chunk_request_body(source, (0,), (slice(0, 4, 1),), (0,), (), skip_nan=False)
    assert body["url"] == f"{ENDPOINT}/bucket/run%201/100%25/x.h5"


# -- local:// (fsspec's name for file://) gets the same bucket-root checks ----------------
def test_a_local_url_domain_does_not_follow_symlinks_out_of_its_root(root: Path) -> None:
    """fsspec's local file system follows symlinks anywhere: a chunk object that is a
    symlink to a file outside the root must not be read through ``local://`` either."""
    import h5dask

    (root / "db").mkdir()
    url = (root / "home" / "d.h5").as_uri()
    with h5dask.File(url, "w") as f:
        f.create_dataset("x", data=np.arange(1, 7, dtype="u1"), chunks=(6,))
    with h5dask.File(url) as f:
        chunk = root / f["x"].source().chunk_key((0,))
    chunk.unlink()
    chunk.symlink_to(root.parent / "bucket-secret" / "s")
    local_url = "local://" + url.removeprefix("file://")
    with h5dask.File(local_url) as f, pytest.raises(InvalidKeyError, match="outside"):
        f["x"][()]
