"""Domain URLs as users write them: each bad one gets an h5dask error naming the URL and
saying what to write instead; the good ones (plain paths with ~, odd key characters on
real S3) name the domain they look like."""

from __future__ import annotations

import numpy as np
import pytest

import h5dask
from h5dask.errors import DomainURLError, UnsupportedURLError
from h5dask.storage import open_location, open_object, sync


@pytest.mark.parametrize("url, match", [
    ("s3://", "no bucket name"),
    ("s3:///home/x.h5", "no bucket name"),
    ("s3://bucket", r"names no domain path.*s3://bucket/home/run1\.h5"),
    ("s3://bucket/", "names no domain path"),
    ("s3://bucket/home//x.h5", r"empty path segments \('//'\) are refused"),
    ("s3://bucket/home/../x.h5", "'..' segments are refused"),
    ("s3://bucket/home/x?.h5", "'?' and '#'"),
    ("s3://bucket/home/x.h5\n", "control characters"),
    ("file://data/x.h5", r"host 'data'.*file:///.*plain path"),
])
def test_bad_urls_are_h5dask_errors_naming_the_url(url, match) -> None:
    with pytest.raises(DomainURLError, match=match) as err:
        open_location(url, {"anon": True} if url.startswith("s3") else None)
    assert isinstance(err.value, ValueError) and repr(url)[1:-1][:12] in str(err.value)


def test_file_url_of_localhost_is_local(tmp_path) -> None:
    loc = open_location(f"file://localhost{tmp_path}/bucket/x.h5")
    assert loc.url == f"file://{tmp_path}/bucket/x.h5"


@pytest.mark.parametrize("url", ["nosuchscheme://b/x.h5", "nosuchscheme:///x.h5"])
def test_unknown_scheme_names_the_supported_ones(url) -> None:
    for call in (lambda: open_location(url), lambda: open_object(url),
                 lambda: h5dask.File(url)):
        with pytest.raises(UnsupportedURLError, match=r"'nosuchscheme://'.*s3://, file://"):
            call()


def test_file_system_without_its_package_says_what_to_install() -> None:
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(UnsupportedURLError, match="gs://.*gcsfs"):
        open_location("gs://bucket/x.h5")


def test_plain_path_expands_the_home_directory(monkeypatch, tmp_path) -> None:
    """As xarray and h5py-style tools do for a local path: '~/' is the home directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    with h5dask.File("~/bucket/run.h5", "w") as f:
        f["x"] = np.arange(3)
    assert (tmp_path / "bucket" / "run.h5" / ".domain.json").is_file()
    with h5dask.File(str(tmp_path / "bucket" / "run.h5")) as f:
        np.testing.assert_array_equal(f["x"][...], np.arange(3))



def test_file_urls_are_percent_encoded_both_ways(tmp_path) -> None:
    """A file:// URL is percent-encoded (RFC 8089), as h5dask writes it (File.url, the
    xarray encoding's "source", linked file_uri): the URL h5dask reports reopens the same
    domain, in directories whose names hold ' ', '%' or '#'."""
    xr = pytest.importorskip("xarray")
    path = tmp_path / "my data %41 #1" / "bucket" / "run 1%.h5"
    with h5dask.File(str(path), "w") as f:
        f["x"] = np.arange(4)
        url = f.url
    assert url.startswith("file://") and " " not in url and "#" not in url
    with h5dask.File(url) as f:
        np.testing.assert_array_equal(f["x"][...], np.arange(4))
    source = xr.open_dataset(str(path), engine="h5cloud").encoding["source"]
    np.testing.assert_array_equal(xr.open_dataset(source, engine="h5cloud")["x"], np.arange(4))
    assert open_location(path.as_uri()).url == url


def test_s3_domain_names_are_keys_verbatim(storage_options, s3_bucket_url) -> None:
    """On real S3 a domain path is the object key as written (the s3fs convention): ' ',
    unicode, '+', '%', '=', '&', ';' reach the server URL-encoded and come back the same,
    and 'a%20b' is not 'a b'."""
    xr = pytest.importorskip("xarray")
    names = ["a b.h5", "a%20b.h5", "ünï 漢.h5", "p+q.h5", "100%.h5", "k=v&w;x.h5"]
    for i, name in enumerate(names):
        with h5dask.File(f"{s3_bucket_url}/{name}", "w", storage_options=storage_options) as f:
            f["x"] = np.full(3, i)
    for i, name in enumerate(names):
        ds = xr.open_dataset(f"{s3_bucket_url}/{name}", engine="h5cloud", chunks={},
                             storage_options=storage_options)
        np.testing.assert_array_equal(ds["x"], np.full(3, i))
    store = open_location(f"{s3_bucket_url}/any.h5", storage_options).store
    prefix = s3_bucket_url.split("/", 3)[3]
    keys = [k for k in sync(store.list(f"{prefix}/")) if k.endswith("/.domain.json")]
    assert sorted(k[len(prefix) + 1:-len("/.domain.json")] for k in keys) == sorted(names)


# '..' in a URL: DomainURLError is its one owner, whatever the entry point (before, a
# load's source or a linked file at s3://b/a/../x.h5 got an InvalidKeyError about an
# "object key", a folder's got one naming an internal probe URL, and a percent-encoded
# '..' in a file:// or memory:// URL was decoded and walked up: another domain, silently)
DOT_URLS = ["s3://bucket/home/../x.h5", "s3://bucket/home/%2E%2E/x.h5",
            "memory://bucket/home/%2e%2e/x.h5", "file:///tmp/bucket/home/..%2Fx.h5",
            "file:///tmp/bucket/./x.h5"]


def _options(url: str) -> dict | None:
    return {"anon": True} if url.startswith("s3") else None


@pytest.mark.parametrize("url", DOT_URLS)
def test_dot_segments_are_one_error_at_every_entry_point(url) -> None:
    import xarray as xr

    from h5dask.storage import open_prefix

    dataset = xr.Dataset({"v": ("x", np.arange(3))})
    calls = {
        "xr.open_dataset": lambda: xr.open_dataset(url, engine="h5cloud",
                                                   storage_options=_options(url)),
        "h5dask.File": lambda: h5dask.File(url, storage_options=_options(url)),
        "h5dask.File w": lambda: h5dask.File(url, "w", storage_options=_options(url)),
        "to_h5cloud": lambda: h5dask.to_h5cloud(dataset, url, storage_options=_options(url)),
        "list_domains": lambda: h5dask.list_domains(url + "/", storage_options=_options(url)),
        "open_prefix": lambda: open_prefix(url + "/", _options(url)),
        "open_object (a load's source)": lambda: open_object(url, _options(url)),
    }
    for name, call in calls.items():
        with pytest.raises(DomainURLError, match="'.' and '..' segments are refused") as err:
            call()
        assert repr(url)[1:-1] in str(err.value), name  # the URL as given
        assert ".h5dask-probe" not in str(err.value), name


# '//' in a URL: file systems and fsspec collapse it, so memory://b/a//x.h5 opened the
# domain memory://b/a/x.h5 (and memory://b//a/x.h5 resolved to another root and key)
EMPTY_SEGMENT_URLS = ["memory://bucket/home//x.h5", "memory://bucket//home/x.h5",
                      "memory://bucket/home/%2F/x.h5", "file:///tmp/bucket/home//x.h5",
                      "s3://bucket/home//x.h5"]


@pytest.mark.parametrize("url", EMPTY_SEGMENT_URLS)
def test_empty_segments_are_refused_not_collapsed(url) -> None:
    from h5dask.storage import open_prefix

    calls = {
        "open_location": lambda: open_location(url, _options(url)),
        "h5dask.File w": lambda: h5dask.File(url, "w", storage_options=_options(url)),
        "list_domains": lambda: h5dask.list_domains(url + "/", storage_options=_options(url)),
        "open_prefix": lambda: open_prefix(url + "/", _options(url)),
    }
    for name, call in calls.items():
        with pytest.raises(DomainURLError, match=r"empty path segments \('//'\) are "
                                                 "refused") as err:
            call()
        assert repr(url)[1:-1] in str(err.value), name


def test_a_url_with_double_slashes_does_not_alias_another_domain() -> None:
    """Before, writing memory://b/a//x.h5 wrote (or overwrote) memory://b/a/x.h5."""
    url = "memory://alias-bucket/home/x.h5"
    with h5dask.File(url, "w") as f:
        f["v"] = np.arange(3)
    with pytest.raises(DomainURLError):
        h5dask.File(url.replace("home/", "home//"), "r")
    with h5dask.File(url, "r") as f:
        assert list(f["v"][:]) == [0, 1, 2]


@pytest.mark.parametrize("command", [["ls", "s3://bucket/home/../"],
                                     ["load", "s3://bucket/a/../src.h5", "memory://b/x.h5"],
                                     ["load", "/no/such/src.h5", "s3://bucket/%2E%2E/x.h5"],
                                     ["rm", "s3://bucket/home/../x.h5"]])
def test_dot_segments_in_the_cli_are_the_same_error(command) -> None:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "h5dask.cli", *command], capture_output=True,
                         text=True, timeout=120,
                         env={**__import__("os").environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert run.returncode != 0
    assert "'.' and '..' segments are refused" in run.stderr, run.stderr
    assert ".h5dask-probe" not in run.stderr
