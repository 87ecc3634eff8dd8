"""The first mistakes a new user makes, each answered by an h5dask error that names what
is wrong and says what to do (on real S3, SeaweedFS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask import list_domains, rm
from h5dask.errors import DomainExistsError, DomainNotFoundError, DomainURLError


@pytest.fixture
def loaded(shared_data, s3_bucket_url, storage_options) -> str:
    """The URL of the CMIP6 sample file loaded as ``<prefix>/home/me/tas.h5``."""
    url = f"{s3_bucket_url}/home/me/tas.h5"
    h5dask.load(shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc", url,
                storage_options=storage_options)
    return url


def test_a_url_inside_a_domain_says_which_domain_and_which_group(loaded, storage_options):
    with pytest.raises(DomainNotFoundError) as err:
        xr.open_dataset(f"{loaded}/tas", engine="h5cloud", storage_options=storage_options)
    assert f"{loaded} is the domain" in str(err.value) and "group='/tas'" in str(err.value)
    assert err.value.detail.startswith(loaded)


def test_a_folder_url_names_the_domains_below_it(loaded, s3_bucket_url, storage_options):
    for folder in (f"{s3_bucket_url}/home/me", f"{s3_bucket_url}/home/me/"):
        with pytest.raises(DomainNotFoundError) as err:
            xr.open_dataset(folder, engine="h5cloud", storage_options=storage_options)
        message = str(err.value)
        assert "holding domains (tas.h5)" in message
        assert f"h5dask ls {s3_bucket_url}/home/me/" in message
    with pytest.raises(DomainNotFoundError) as err:  # the domains are further down
        h5dask.File(f"{s3_bucket_url}/home", storage_options=storage_options)
    assert f"h5dask ls {s3_bucket_url}/home/" in str(err.value)


def test_a_url_that_names_nothing_says_only_that(s3_bucket_url, storage_options):
    with pytest.raises(DomainNotFoundError) as err:
        h5dask.File(f"{s3_bucket_url}/home/none.h5", storage_options=storage_options)
    assert str(err.value).endswith("its .domain.json does not exist")


def test_writing_to_a_folder_url_is_refused_with_a_domain_url_to_use(
        shared_data, s3_bucket_url, storage_options):
    """Only load knows a name for the domain (the file's), and uses it: see below."""
    folder = f"{s3_bucket_url}/home/me/"
    with pytest.raises(DomainURLError, match="names no domain path"):
        h5dask.load(shared_data / "daily_data.nc", "s3://h5dask-test",
                    storage_options=storage_options)
    ds = xr.Dataset({"v": ("x", np.arange(3.0))})
    with pytest.raises(DomainURLError, match=f"names a folder.*'{folder}NAME.h5'"):
        h5dask.to_h5cloud(ds, folder, storage_options=storage_options)
    with pytest.raises(DomainURLError, match="names a folder"):
        h5dask.File(folder, "w", storage_options=storage_options)
    assert list_domains(f"{s3_bucket_url}/", storage_options) == []  # nothing written


def test_load_into_a_folder_url_makes_the_domain_name_h5_in_it(shared_data, s3_bucket_url,
                                                               storage_options):
    folder = f"{s3_bucket_url}/home/me/"
    summary = h5dask.load(shared_data / "daily_data.nc", folder,
                          storage_options=storage_options)
    assert summary.url == f"{folder}daily_data.h5"
    assert list_domains(f"{s3_bucket_url}/", storage_options) == [summary.url]


def test_load_into_an_existing_domain_says_overwrite_or_rm(loaded, shared_data,
                                                          storage_options):
    with pytest.raises(DomainExistsError, match="overwrite=True.*h5dask rm"):
        h5dask.load(shared_data / "daily_data.nc", loaded, storage_options=storage_options)
    ds = xr.open_dataset(loaded, engine="h5cloud", storage_options=storage_options)
    assert "tas" in ds  # the domain is untouched


def test_rm_of_a_domain_leaves_the_domains_in_folders_below_it(s3_bucket_url,
                                                               storage_options):
    """A domain whose path is also a folder of other domains (as an older h5dask made of
    ``h5dask load x.nc s3://bucket/home/me/``): rm removes only its own objects."""
    outer, inner = f"{s3_bucket_url}/home/me", f"{s3_bucket_url}/home/me/run1.h5"
    for url in (outer, inner):
        with h5dask.File(url, "w", storage_options=storage_options) as f:
            f.create_dataset("x", data=np.arange(4.0))
    rm(outer, storage_options=storage_options)
    assert list_domains(f"{s3_bucket_url}/", storage_options) == [inner]
    with h5dask.File(inner, storage_options=storage_options) as f:
        assert f["x"][...].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_s3_options_with_a_url_missing_its_s3_scheme_say_so(tmp_path, monkeypatch,
                                                            shared_data, storage_options):
    from h5dask.errors import StorageOptionsError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageOptionsError, match="the URL is a local path.*s3://bucket/path"):
        h5dask.load(shared_data / "daily_data.nc", "bucket/home/me/run1.h5",
                    storage_options=storage_options)
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_gives_the_same_answers(loaded, shared_data, seaweedfs):
    h5dask_cli = Path(sys.executable).parent / "h5dask"
    env = {**os.environ, **seaweedfs.env()}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(h5dask_cli), *args], capture_output=True, text=True,
                              timeout=120, env=env, stdin=subprocess.DEVNULL)

    inside = run("ls", f"{loaded}/tas")
    assert inside.returncode == 3 and "h5dask info DOMAIN --path /tas" in inside.stderr
    folder = loaded.rsplit("/", 1)[0] + "/"
    daily = str(shared_data / "daily_data.nc")
    into_folder = run("load", daily, folder)  # as cp into a directory: FOLDER/NAME.h5
    assert into_folder.returncode == 0 and f"-> {folder}daily_data.h5" in into_folder.stdout
    two_into_a_domain = run("load", daily, str(shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc"),
                            f"{folder}x.h5")
    assert two_into_a_domain.returncode == 2 and "folder URL ending in '/'" in \
        two_into_a_domain.stderr
    same_name = run("load", daily, daily, f"{folder}again/")
    assert same_name.returncode == 2 and "daily_data.h5" in same_name.stderr
    assert "Traceback" not in into_folder.stderr + inside.stderr
    assert sorted(h5dask.list_domains(folder, {**seaweedfs.storage_options()})) == \
        [f"{folder}daily_data.h5", loaded]


def test_an_hsds_server_url_says_where_the_domain_is_in_storage():
    from h5dask.errors import UnsupportedURLError

    for url in ("hdf5://home/me/run1.h5", "http://hsds.example:5101/home/me/run1.h5"):
        with pytest.raises(UnsupportedURLError, match="s3://BUCKET/home/me/run1.h5") as err:
            xr.open_dataset(url, engine="h5cloud")
        assert "file:///ROOT/BUCKET/home/me/run1.h5" in str(err.value)


def test_an_s3_url_without_a_bucket_is_a_domain_url_error():
    with pytest.raises(DomainURLError, match="no bucket name.*s3://BUCKET/path"):
        h5dask.File("s3:/bucket/home/me/run1.h5")


def test_a_netcdf4_file_in_the_bucket_says_load_or_link_it(shared_data, s3_bucket_url,
                                                           storage_options):
    from h5dask.storage import open_location, sync

    url = f"{s3_bucket_url}/files/daily.nc"
    store = open_location(url, storage_options).store
    sync(store.put(url.split("/", 3)[3], (shared_data / "daily_data.nc").read_bytes()))
    with pytest.raises(DomainNotFoundError, match="not an h5dask/HSDS domain") as err:
        xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    assert f"h5dask load {url} DOMAIN_URL" in str(err.value) and "--link" in str(err.value)
    linked = h5dask.load(url, f"{s3_bucket_url}/home/me/", link=True,
                         storage_options=storage_options)  # the advice, followed
    assert linked.url == f"{s3_bucket_url}/home/me/daily.h5" and linked.chunks_linked > 0


def test_a_misspelt_source_file_is_an_h5dask_error_naming_it(tmp_path, s3_bucket_url,
                                                             storage_options):
    from h5dask.errors import SourceNotFoundError

    missing = tmp_path / "run9.nc"
    with pytest.raises(SourceNotFoundError, match=f"source file '{missing}' does not exist"):
        h5dask.load(missing, f"{s3_bucket_url}/home/me/", storage_options=storage_options)
    assert isinstance(SourceNotFoundError("x"), FileNotFoundError)  # CLI exit code 3 stays


def _requests() -> tuple[int, int]:
    """(GETs and HEADs, LISTs) made so far in this process, of every kind."""
    total = h5dask.stats()["total"]
    return total["read_requests"], total["list_requests"]


@pytest.fixture
def folder(s3_bucket_url, storage_options) -> str:
    """A folder holding two small domains: ``<prefix>/home/me/``."""
    for name in ("a.h5", "b.h5"):
        with h5dask.File(f"{s3_bucket_url}/home/me/{name}", "w",
                         storage_options=storage_options) as f:
            f["x"] = np.arange(3)
    return f"{s3_bucket_url}/home/me/"


def test_the_near_miss_hint_costs_requests_only_when_the_error_is_shown(
        folder, s3_bucket_url, storage_options):
    """Before, every failed open paid the hint's GETs and LIST at once, also for callers
    that catch the error and go on (``h5dask ls FOLDER/``, code probing for a domain)."""
    h5dask.reset_stats()
    with pytest.raises(DomainNotFoundError) as err:
        h5dask.File(folder, storage_options=storage_options)
    caught = _requests()
    assert caught[1] == 0 and caught[0] <= 3, caught  # .domain.json (+ summary), the sniff
    assert "holding domains (a.h5, b.h5)" in str(err.value)  # shown: the hint, now
    shown = _requests()
    assert shown[1] == 1 and shown[0] > caught[0], shown
    str(err.value)  # and once only
    assert _requests() == shown


def test_the_near_miss_hint_cost_is_bounded_by_depth(s3_bucket_url, storage_options):
    from h5dask.domain import _NEAR_MISS_CHILDREN, _NEAR_MISS_PARENTS

    deep = f"{s3_bucket_url}/" + "/".join(f"d{i}" for i in range(30)) + "/x.h5"
    with pytest.raises(DomainNotFoundError) as err:
        h5dask.File(deep, storage_options=storage_options)
    before = _requests()
    str(err.value)
    reads, lists = (a - b for a, b in zip(_requests(), before))
    assert reads <= _NEAR_MISS_PARENTS + _NEAR_MISS_CHILDREN and lists <= 1, (reads, lists)


def test_ls_of_a_folder_pays_no_hint_before_listing(folder, seaweedfs, storage_options):
    """`h5dask ls FOLDER/` tries the URL as a domain, then lists: the same requests as
    that try and list_domains, nothing more."""
    from click.testing import CliRunner

    from h5dask.cli import main

    h5dask.reset_stats()
    assert len(list_domains(folder, storage_options)) == 2
    listing = _requests()
    h5dask.reset_stats()
    env = {"AWS_ACCESS_KEY_ID": storage_options["key"],
           "AWS_SECRET_ACCESS_KEY": storage_options["secret"],
           "AWS_ENDPOINT_URL": seaweedfs.endpoint}
    result = CliRunner(env=env).invoke(main, ["ls", folder])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [f"{folder}a.h5", f"{folder}b.h5"]
    reads, lists = _requests()
    assert lists == listing[1], (lists, listing)  # before: one more, the hint's
    assert reads <= listing[0] + 3, (reads, listing)  # the try: .domain.json, summary, sniff
