"""Interop, hdf5plugin filters -> HSDS: an HDF5 file with a dataset per ``hdf5plugin``
filter, loaded by ``h5dask load`` into HSDS's bucket, is served by the real HSDS 1.0.2
server with h5py's values: every dataset of the copy (stored with HSDS's filter of the
same name), and of the linked domain the ones whose filter HSDS decodes as HDF5 wrote
it (Blosc: one Blosc frame per chunk). The others were linked with an
``HSDSUnreadableWarning`` (tests/ingest/test_plugin_filters.py pins it); here HSDS is
shown to fail on one of them rather than serve wrong values."""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import urlsplit

import h5py
import hdf5plugin
import numpy as np
import pytest
import requests
from interop_compare import fresh_name

from h5dask.errors import HSDSUnreadableWarning
from h5dask.ingest import load_file

h5pyd = pytest.importorskip("h5pyd")

pytestmark = [pytest.mark.hsds, pytest.mark.timeout(600)]

DATA = (np.arange(60 * 40, dtype="<f4").reshape(60, 40) % 97) / 8
FILTERS = {
    "lz4": hdf5plugin.LZ4(),
    "zstd": hdf5plugin.Zstd(clevel=5),
    "bitshuffle_none": hdf5plugin.Bitshuffle(cname="none"),
    "bitshuffle_lz4": hdf5plugin.Bitshuffle(cname="lz4"),
    "bitshuffle_zstd": hdf5plugin.Bitshuffle(cname="zstd"),
    "blosc_lz4": hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE),
    "blosc_zstd_bit": hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.BITSHUFFLE),
    "blosc_zlib": hdf5plugin.Blosc(cname="zlib"),
    "blosc2_zstd": hdf5plugin.Blosc2(cname="zstd"),
    "blosc2_lz4": hdf5plugin.Blosc2(cname="lz4", filters=hdf5plugin.Blosc2.BITSHUFFLE),
    "bzip2": hdf5plugin.BZip2(),
}
HSDS_DECODES_LINKED = {"blosc_lz4", "blosc_zstd_bit", "blosc_zlib"}


@pytest.fixture(scope="module")
def source(seaweedfs, hsds_s3, tmp_path_factory) -> tuple[Path, str]:
    """The file, locally and in HSDS's bucket (where HSDS may read linked chunks)."""
    path = tmp_path_factory.mktemp("plugins-hsds") / "plugins.h5"
    with h5py.File(path, "w") as f:
        for name, kwargs in FILTERS.items():
            f.create_dataset(name, data=DATA * (1 + len(name)), chunks=(20, 20), **kwargs)
    key = f"sources/{fresh_name('plugins')}.h5"
    seaweedfs.s3_client().put_object(Bucket=hsds_s3.bucket, Key=key, Body=path.read_bytes())
    return path, f"s3://{hsds_s3.bucket}/{key}"


def _load(hsds_s3, storage_options, src: str, link: bool) -> str:
    domain = f"/home/{hsds_s3.username}/{fresh_name('plugins-link' if link else 'plugins')}"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_file(src, f"s3://{hsds_s3.bucket}{domain}", link=link, progress=False,
                  storage_options=storage_options)
    if link:
        warned = {str(w.message).split(": ")[1] for w in seen
                  if issubclass(w.category, HSDSUnreadableWarning)}
        assert warned == {f"/{n}" for n in FILTERS if n not in HSDS_DECODES_LINKED
                          and n != "bzip2"}, warned
    return domain


def test_hsds_serves_the_copy_of_every_plugin_filter(source, hsds_s3, storage_options):
    path, src = source
    domain = _load(hsds_s3, storage_options, src, link=False)
    with h5pyd.File(domain, "r", retries=1, **hsds_s3.h5pyd_kwargs()) as g, \
            h5py.File(path) as h:
        for name in FILTERS:
            assert g[name].dtype == h[name].dtype, name
            np.testing.assert_array_equal(g[name][()], h[name][()], err_msg=name)


def test_hsds_serves_linked_blosc_and_fails_loudly_on_the_others(source, hsds_s3,
                                                                  storage_options):
    path, src = source
    domain = _load(hsds_s3, storage_options, src, link=True)
    with h5pyd.File(domain, "r", retries=1, **hsds_s3.h5pyd_kwargs()) as g, \
            h5py.File(path) as h:
        for name in sorted(HSDS_DECODES_LINKED):
            np.testing.assert_array_equal(g[name][()], h[name][()], err_msg=name)
        dset_id = g["zstd"].id.uuid
    # one request, no client retries: HSDS 1.0.2 cannot decode HDF5's zstd frames
    rsp = requests.get(f"{hsds_s3.endpoint}/datasets/{dset_id}/value",
                       params={"domain": domain, "select": "[0:20,0:20]"},
                       auth=(hsds_s3.username, hsds_s3.password), timeout=120)
    assert rsp.status_code >= 500, rsp.status_code
    assert urlsplit(src).scheme == "s3"
