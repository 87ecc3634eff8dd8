"""Files compressed with the filters ``hdf5plugin`` provides (LZ4, Zstd, Bitshuffle in its
three modes, Blosc with its compressors and shuffles, Blosc2, and BZip2/SZ/ZFP that h5dask
does not decode) load in copy mode with h5py's values, stored with HSDS's filter of the
same name; ``load --link`` links every one h5dask decodes as HDF5 wrote it (and warns
where HSDS cannot), and copies the others with a message naming the filter."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.errors import CorruptChunkError, HSDSUnreadableWarning
from h5dask.format import codecs
from h5dask.format.codecs.plugin_frames import (
    bitshuffle_hdf5_decode,
    blosc2_decode,
    lz4_hdf5_decode,
    zstd_decode,
)
from h5dask.format.compression import OutputTooLarge
from h5dask.format.filters import ChunkCodec
from h5dask.ingest import load_file

DATA = (np.arange(40 * 50, dtype="<f4").reshape(40, 50) % 97) / 8  # compressible: no chunk skips
INTS = np.arange(2 * 6 * 10, dtype=">i8").reshape(2, 6, 10) * 3 - 50  # 28-element chunks

#: name -> (h5py filter kwargs, HSDS filters of the copy, HSDS reads the linked chunks)
FILTERS = {
    "lz4": (hdf5plugin.LZ4(), ["lz4"], False),
    "lz4_blocks": (hdf5plugin.LZ4(nbytes=96), ["lz4"], False),
    "zstd": (hdf5plugin.Zstd(clevel=5), ["zstd"], False),
    "bitshuffle_none": (hdf5plugin.Bitshuffle(cname="none"), ["bitshuffle"], False),
    "bitshuffle_lz4": (hdf5plugin.Bitshuffle(cname="lz4"), ["bitshuffle", "lz4"], False),
    "bitshuffle_zstd": (hdf5plugin.Bitshuffle(cname="zstd"), ["bitshuffle", "zstd"], False),
    "blosc_lz4_shuffle": (hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE),
                          ["shuffle", "lz4"], True),
    "blosc_zstd_bitshuffle": (hdf5plugin.Blosc(cname="zstd", clevel=3,
                                               shuffle=hdf5plugin.Blosc.BITSHUFFLE),
                              ["shuffle", "zstd"], True),
    "blosc_blosclz_noshuffle": (hdf5plugin.Blosc(cname="blosclz",
                                                 shuffle=hdf5plugin.Blosc.NOSHUFFLE),
                                ["blosclz"], True),
    "blosc_lz4hc": (hdf5plugin.Blosc(cname="lz4hc"), ["shuffle", "lz4hc"], True),
    "blosc_zlib": (hdf5plugin.Blosc(cname="zlib"), ["shuffle", "gzip"], True),
    "blosc2_zstd": (hdf5plugin.Blosc2(cname="zstd"), ["shuffle", "zstd"], False),
    "blosc2_lz4_bitshuffle": (hdf5plugin.Blosc2(cname="lz4", filters=hdf5plugin.Blosc2.BITSHUFFLE),
                              ["shuffle", "lz4"], False),
    "blosc2_blosclz_noshuffle": (hdf5plugin.Blosc2(cname="blosclz",
                                                   filters=hdf5plugin.Blosc2.NOFILTER),
                                 ["blosclz"], False),
}
#: filters h5dask does not decode: copied (values decoded by HDF5) as gzip
NOT_DECODED = {
    "bzip2": hdf5plugin.BZip2(),
    "zfp_reversible": hdf5plugin.Zfp(reversible=True),
    "sz_absolute": hdf5plugin.SZ(absolute=0.01),
    "blosc_snappy": hdf5plugin.Blosc(cname="snappy"),  # numcodecs' Blosc has no snappy
}


def write(path: Path, kwargs: dict) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=DATA, chunks=(10, 25), **kwargs)
        f.create_dataset("ints", data=INTS, chunks=(1, 4, 7), **kwargs)
        f["data"].attrs["units"] = "K"


def chunk_skipped_filter(src: Path, name: str) -> bool:
    with h5py.File(src) as h5:
        dset = h5[name]
        return any(dset.id.get_chunk_info(i).filter_mask
                   for i in range(dset.id.get_num_chunks()))


def filter_names(dset: h5dask.Dataset) -> list[str]:
    return [codecs.lookup(item).name for item in dset.filters]


def load_quietly(src: Path, url: str, **kwargs) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_file(src, url, progress=False, **kwargs)


def assert_same_values(url: str, src: Path) -> None:
    with h5py.File(src) as h5, h5dask.File(url) as f:
        for name in ("data", "ints"):
            assert f[name].dtype == h5[name].dtype, name
            np.testing.assert_array_equal(f[name][...], h5[name][...], err_msg=name)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("plugins") / "store" / "sources"
    where.mkdir(parents=True)
    for name, (kwargs, _, _) in FILTERS.items():
        write(where / f"{name}.h5", kwargs)
    for name, kwargs in NOT_DECODED.items():
        write(where / f"{name}.h5", kwargs)
    return where


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_copy_has_h5py_values_and_the_hsds_filter_of_the_same_name(name: str, sources: Path
                                                                   ) -> None:
    src = sources / f"{name}.h5"
    url = (sources.parent / f"copy-{name}.h5").as_uri()
    load_quietly(src, url)
    assert_same_values(url, src)
    with h5dask.File(url) as f:
        assert filter_names(f["data"]) == FILTERS[name][1]


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_link_keeps_hdf5s_chunks_and_reads_them(name: str, sources: Path) -> None:
    src = sources / f"{name}.h5"
    url = (sources.parent / f"link-{name}.h5").as_uri()
    hsds_reads = FILTERS[name][2]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        summary = load_file(src, url, progress=False, link=True)
    # a dataset with a chunk HDF5 stored unfiltered (the filter did not shrink it) is
    # copied: its chunks do not share one codec
    skipped_filter = [name for name in ("/data", "/ints") if chunk_skipped_filter(src, name)]
    assert summary.linked and summary.copied == skipped_filter and summary.chunks_linked > 0
    assert len(skipped_filter) < 2
    unreadable = [w for w in seen if issubclass(w.category, HSDSUnreadableWarning)]
    if hsds_reads:
        assert not unreadable
    else:  # one warning per dataset, naming the file, the dataset and the filter
        assert len(unreadable) == 2 - len(skipped_filter)
        message = str(unreadable[-1].message)
        assert src.name in message and "/ints" in message and "HSDS" in message
        with h5py.File(src) as h5:
            code = int(next(iter(h5["data"]._filters)))
        assert codecs.by_hdf5_id(code).name in message
    assert_same_values(url, src)
    with h5dask.File(url) as f:  # HDF5's own filter, by HSDS's name for it
        ids = [item["id"] for item in f["data"].filters]
    with h5py.File(src) as h5:
        assert ids == [int(k) for k in h5["data"]._filters]


@pytest.mark.parametrize("name", sorted(NOT_DECODED))
def test_filters_h5dask_cannot_decode_are_copied_with_a_message(name: str, sources: Path
                                                                ) -> None:
    src = sources / f"{name}.h5"
    url = (sources.parent / f"nolink-{name}.h5").as_uri()
    with pytest.warns(UserWarning) as seen:
        summary = load_file(src, url, progress=False, link=True)
    assert summary.copied == ["/data", "/ints"]
    code = int(next(iter(h5py.File(src)["data"]._filters)))
    messages = [str(w.message) for w in seen if "copied, not linked" in str(w.message)]
    assert len(messages) == 2 and f"({code})" in messages[0] and "/data" in messages[0]
    assert_same_values(url, src)  # values as h5py decodes them (lossy ones included)


def test_a_filter_hdf5_has_no_decoder_for_skips_its_datasets_saying_what_to_install(
        sources: Path, tmp_path: Path) -> None:
    """Without the plugin, HDF5 fails with its raw "can't open directory" OSError; load
    skips the datasets that need it, naming the filter and hdf5plugin, and loads the
    rest (here: the attribute-free root group)."""
    import subprocess
    import sys

    script = f"""
import sys
sys.modules["hdf5plugin"] = None  # as if hdf5plugin were not installed
from h5dask.ingest import load_file
summary = load_file({str(sources / 'bzip2.h5')!r}, {(tmp_path / 'x.h5').as_uri()!r},
                    progress=False)
print("\\n".join(summary.skipped))
"""
    env = {"HDF5_PLUGIN_PATH": str(tmp_path), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(h5dask.__file__).parents[1])}
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["/data", "/ints"], run.stdout
    assert all("bzip2.h5" in line and "filter 307" in line and "pip install hdf5plugin"
               in line for line in lines), run.stdout
    with h5dask.File((tmp_path / "x.h5").as_uri()) as f:
        assert list(f) == []


def test_xarray_reads_copied_and_linked_as_h5netcdf_reads(sources: Path) -> None:
    for name in ("lz4", "bitshuffle_zstd", "blosc2_zstd", "blosc_zlib", "bzip2"):
        src = sources / f"{name}.h5"
        want = xr.open_dataset(src, engine="h5netcdf", phony_dims="sort").load()
        for link in (False, True):
            url = (sources.parent / f"xr-{name}-{link}.h5").as_uri()
            load_quietly(src, url, link=link)
            got = xr.open_dataset(url, engine="h5cloud", phony_dims="sort").load()
            xr.testing.assert_identical(got, want)


# -- the decoders: exact, and bounded -------------------------------------------------------
def test_decoders_refuse_more_than_the_limit_before_decoding() -> None:
    import lz4.block
    import zstandard

    big = 64 << 20
    zeros = bytes(1 << 20)
    body = lz4.block.compress(zeros, store_size=False)
    lz4_frame = big.to_bytes(8, "big") + (1 << 20).to_bytes(4, "big") + \
        len(body).to_bytes(4, "big") + body
    with pytest.raises(OutputTooLarge):
        lz4_hdf5_decode(lz4_frame, 4096)
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(big))  # a few KB
    with pytest.raises(OutputTooLarge):
        zstd_decode(bomb, 4096)
    with pytest.raises(OutputTooLarge):
        bitshuffle_hdf5_decode(lz4_frame, 4, 4096, "lz4")
    blosc2 = pytest.importorskip("blosc2")
    with pytest.raises(OutputTooLarge):
        blosc2_decode(blosc2.SChunk(chunksize=1 << 20, data=bytes(big)).to_cframe(), 4096)


def test_a_damaged_linked_chunk_is_a_corrupt_chunk_error(sources: Path) -> None:
    for name in ("lz4", "zstd", "bitshuffle_lz4", "bitshuffle_zstd", "blosc2_zstd"):
        with h5py.File(sources / f"{name}.h5") as h5:
            dset = h5["data"]
            _mask, raw = dset.id.read_direct_chunk((0, 0))
            items = [codecs.by_hdf5_id(int(k)).native_json(tuple(v))
                     for k, v in dset._filters.items()]
            codec = ChunkCodec.from_filters(items, dset.dtype, dset.chunks, hdf5_native=True)
        for bad in (raw[: len(raw) // 2], raw[:20] + bytes(len(raw) - 20)):
            with pytest.raises(CorruptChunkError):
                codec.decode(bad, f"{name}[0]")
        assert json.dumps(items)  # plain JSON, as stored in the domain


def test_cli_load_link_names_what_it_linked_for_h5dask_only_and_what_it_copied(
        sources: Path) -> None:
    from click.testing import CliRunner

    from h5dask.cli import main

    for name, expect in (("zstd", "linked with the zstd filter"),
                         ("sz_absolute", "cannot decode filter sz (32017)")):
        src = sources / f"{name}.h5"
        url = (sources.parent / f"cli-{name}.h5").as_uri()
        result = CliRunner().invoke(main, ["load", "--link", "--no-progress", str(src), url])
        assert result.exit_code == 0, result.output
        assert expect in result.stderr and "/data" in result.stderr, result.stderr
        assert_same_values(url, src)


def test_pushdown_reduces_linked_plugin_framings_locally(sources: Path) -> None:
    """The active server decodes Blosc frames (HDF5's Blosc filter writes one), not HDF5's
    LZ4/Zstd/Blosc2 framings: chunks of those are refused for pushdown (reduced locally)."""
    from h5dask.active.pushdown import chunk_request_body

    for name, server_decodes in (("lz4", False), ("zstd", False), ("blosc2_zstd", False),
                                 ("blosc_zlib", True)):
        url = (sources.parent / f"push-{name}.h5").as_uri()
        load_quietly(sources / f"{name}.h5", url, link=True)
        with h5dask.File(url) as f:
            source = f["data"].source()
            assert source.codec.hdf5_native
            with pytest.raises(ValueError) as info:  # file:// is no S3 endpoint either
                chunk_request_body(source, (0, 0), (slice(0, 10, 1), slice(0, 25, 1)),
                                   (0, 1), (), False)
        refused_codec = "cannot be decoded by the server" in str(info.value)
        assert refused_codec is not server_decodes, (name, str(info.value))


#: a filter id no plugin here provides (HDF5 reserves 32000-65535 for registered filters)
UNAVAILABLE_FILTER = 32999


def write_with_unavailable_filter(path: Path) -> Path:
    """A file with "/odd", chunks stored as written by a filter HDF5 has no plugin for
    (H5Z_FLAG_OPTIONAL lets h5py create it; the chunks are written raw with
    filter_mask 0, as that filter's plugin would have stored them), "/skipped_filter",
    whose only chunk skipped it (filter_mask bit set: h5py reads it), and "/ok"."""
    from h5py import h5d, h5p, h5s, h5t, h5z

    with h5py.File(path, "w") as f:
        f["ok"] = np.arange(10.0)
        for name, mask in (("odd", 0), ("skipped_filter", 1)):
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_chunk((4,))
            dcpl.set_filter(UNAVAILABLE_FILTER, h5z.FLAG_OPTIONAL, (1, 2))
            dsid = h5d.create(f.id, name.encode(), h5t.STD_I32LE, h5s.create_simple((4,)), dcpl)
            dsid.write_direct_chunk((0,), np.arange(4, dtype="<i4").tobytes(), filter_mask=mask)
    return path


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_a_filter_without_plugin_skips_that_dataset_naming_the_filter_and_what_to_install(
        link: bool, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    src = write_with_unavailable_filter(tmp_path / "store" / "odd.h5")
    with h5py.File(src) as h5:  # h5py itself cannot read it here
        with pytest.raises(OSError):
            h5["odd"][...]
    url = (tmp_path / "store" / "odd-domain.h5").as_uri()
    summary = load_quietly(src, url, link=link)
    assert len(summary.skipped) == 1
    skipped = summary.skipped[0]
    assert skipped.startswith("/odd: dataset") and str(UNAVAILABLE_FILTER) in skipped
    assert "HDF5_PLUGIN_PATH" in skipped and "hdf5plugin" in skipped
    with h5py.File(src) as h5, h5dask.File(url) as f:  # the rest of the file loaded
        assert sorted(f) == ["ok", "skipped_filter"]
        for name in ("ok", "skipped_filter"):
            np.testing.assert_array_equal(f[name][...], h5[name][...])
