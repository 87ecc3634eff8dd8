"""The :class:`Codec` base class and the registry lookups.

Lookups happen when a dataset's :class:`~h5dask.format.filters.ChunkCodec` is built,
never per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ...errors import UnsupportedFilterError

__all__ = ["Codec", "MappedFilters", "all_codecs", "by_hdf5_id", "by_reductionist", "compressor",
           "compressors", "lookup", "register", "unregister"]

#: roles a filter plays in a chunk pipeline (HDF5 order: reorder, compress, checksum)
COMPRESSOR, SHUFFLE, BITSHUFFLE, CHECKSUM, OTHER = (
    "compressor", "shuffle", "bitshuffle", "checksum", "other")


@dataclass
class MappedFilters:
    """What ``h5dask load`` makes of a source file's HDF5 filter pipeline when it copies
    chunks: one compressor (HSDS applies at most one), shuffle, fletcher32, and notes on
    what changed on the way."""

    compressor: str | None = None
    level: int | None = None
    shuffle: bool = False
    bitshuffle: bool = False
    fletcher32: bool = False
    notes: list[str] = field(default_factory=list)


class Codec:
    """One filter: its names and ids, its level rule, and how to undo/apply it.

    Subclasses set the class attributes and, for compressors, :meth:`encode` and
    :meth:`decode`. ``decode`` must never produce more than ``limit`` bytes: it raises
    :class:`~h5dask.format.compression.OutputTooLarge` instead (decompression bombs),
    and ``ValueError`` for undecodable bytes.
    """

    name: ClassVar[str]  # canonical name, as h5py's compression= spells it
    hsds_class: ClassVar[str]  # HSDS filter JSON "class"
    hdf5_id: ClassVar[int]  # HDF5 filter id (H5Z_filter_t)
    aliases: ClassVar[tuple[str, ...]] = ()
    role: ClassVar[str] = OTHER
    #: (lowest, highest) compression level, or None when the codec takes no level
    levels: ClassVar[tuple[int, int] | None] = None
    default_level: ClassVar[int | None] = None
    #: a level not given is stored as ``default_level`` (gzip: h5py stores and reports
    #: 4); else no level is stored and none reported, as h5pyd writes (HSDS then
    #: compresses at its own default) and as h5py reports HDF5's LZ4/Blosc filters
    stores_default_level: ClassVar[bool] = False
    #: Reductionist ``compression`` ids this codec decodes on the server; the first is
    #: what pushdown asks for. Empty: chunks with this codec are reduced locally.
    reductionist: ClassVar[tuple[str, ...]] = ()
    #: HSDS stores chunks with this compressor as Blosc frames of this compressor name
    blosc_cname: ClassVar[str | None] = None
    #: h5dask can read and write chunks with this filter
    supported: ClassVar[bool] = True
    #: HSDS lists this filter but does not apply it, so it is a no-op on HSDS chunks
    hsds_noop: ClassVar[bool] = False
    #: an HSDS server can decode the chunks h5dask writes with this codec
    hsds_decodes: ClassVar[bool] = True
    #: h5dask decodes this filter's own HDF5 output (chunks linked inside HDF5 files)
    decodes_native: ClassVar[bool] = False
    #: an HSDS server decodes this filter's own HDF5 output too, so a linked dataset
    #: with it is served by HSDS (else ``load --link`` warns: only h5dask reads it)
    linkable: ClassVar[bool] = False

    # -- HSDS filter JSON and options ---------------------------------------------------
    def json(self, level: int | None = None) -> dict:
        """HSDS filter JSON, e.g. ``{"class": "H5Z_FILTER_DEFLATE", "id": 1, ...}``."""
        out: dict[str, Any] = {"class": self.hsds_class, "id": self.hdf5_id, "name": self.name}
        if self.levels is not None and (level is not None or self.stores_default_level):
            out["level"] = self.default_level if level is None else int(level)
        return out

    def check_level(self, level: Any) -> int | None:
        """The level to store for a user's ``compression_opts``; ValueError when out of range."""
        if level is None:
            return None
        if self.levels is None:
            raise ValueError(f"compression {self.name!r} takes no level (compression_opts), "
                             f"got {level!r}")
        low, high = self.levels
        if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
            raise ValueError(f"compression level must be {low}-{high}, not {level!r}")
        return level

    def level_of(self, item: Any) -> int | None:
        """The level a filter JSON item carries (the default when it carries none)."""
        if self.levels is None:
            return None
        if isinstance(item, dict) and isinstance(item.get("level"), int):
            return item["level"]
        return self.default_level

    # -- chunk bytes ----------------------------------------------------------------
    def encode(self, raw: bytes, level: int | None) -> bytes:
        """Compress ``raw`` (already shuffled if the dataset shuffles), as stored."""
        raise ValueError(f"{self.name} chunks are stored as Blosc frames only")

    def decode(self, data: bytes | memoryview, limit: int) -> bytes | bytearray:
        """Undo :meth:`encode`, producing at most ``limit`` bytes."""
        raise ValueError(f"not a Blosc frame ({self.name} expected)")

    def decode_native(self, data: bytes | memoryview, limit: int) -> bytes | bytearray:
        """Undo the HDF5 filter's own output (chunks inside HDF5 files)."""
        return self.decode(data, limit)

    def decode_native_into(self, data: bytes | memoryview, out: np.ndarray,
                           element_size: int) -> bool:
        """Undo the HDF5 filter's own output straight into ``out`` (C-contiguous uint8
        of the decoded size), then HDF5's byte shuffle of ``element_size``-byte elements
        when that is above 1; False (nothing written) when this codec cannot, ValueError
        or OutputTooLarge when the data does not decode to exactly ``out``."""
        return False

    def reductionist_decode(self, data: bytes | memoryview,
                            max_size: int) -> tuple[bytes | bytearray, bool]:
        """The active server's decompression: (bytes, whether a Blosc frame was decoded,
        so its shuffle is already undone)."""
        return self.decode(data, max_size), False

    def decodes_native_with(self, cd_values: tuple) -> bool:
        """True if h5dask decodes this filter's HDF5 output made with ``cd_values``."""
        return self.decodes_native

    def native_json(self, cd_values: tuple) -> dict:
        """HSDS filter JSON for this HDF5 filter (with ``cd_values``) in a linked dataset:
        what reading its chunks as HDF5 wrote them needs (level: the first cd_value)."""
        return self.json(int(cd_values[0]) if cd_values and self.levels else None)

    # -- ingest ---------------------------------------------------------------------
    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        """Record what a copy of chunks with this HDF5 filter (and ``cd_values``) stores."""
        if self.role == COMPRESSOR:
            out.compressor = self.name
            out.level = (int(cd_values[0]) if cd_values and self.levels is not None
                         else self.default_level)
        elif self.role == SHUFFLE:
            out.shuffle = True
        elif self.role == CHECKSUM:
            out.fletcher32 = True
        else:
            self.map_as_gzip(out)

    def map_as_gzip(self, out: MappedFilters) -> None:
        """A filter a copy cannot keep: its chunks are recompressed with gzip."""
        out.compressor, out.level = "gzip", 4
        out.notes.append(f"filter {self.hdf5_id} -> gzip")

    def __repr__(self) -> str:
        return f"<codec {self.name} (HDF5 filter {self.hdf5_id})>"


_BY_NAME: dict[str, Codec] = {}
_BY_ID: dict[int, Codec] = {}
_BY_CLASS: dict[str, Codec] = {}


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make ``cls`` known by its name, aliases, HSDS class and HDF5 id
    (a later registration replaces an earlier one of the same name or id)."""
    codec = cls()
    for name in (cls.name, *cls.aliases):
        _BY_NAME[name.lower()] = codec
    _BY_ID[cls.hdf5_id] = codec
    _BY_CLASS[cls.hsds_class] = codec
    return cls


def unregister(name: str) -> None:
    """Forget the codec called ``name`` (for tests that register their own)."""
    codec = _BY_NAME.get(name.lower())
    for table in (_BY_NAME, _BY_ID, _BY_CLASS):
        for key in [k for k, v in table.items() if v is codec]:
            del table[key]


def all_codecs() -> list[Codec]:
    """Every registered codec, by HDF5 id."""
    return sorted(set(_BY_ID.values()), key=lambda c: c.hdf5_id)


def compressors() -> tuple[str, ...]:
    """Names accepted as ``compression=`` (supported compressors)."""
    return tuple(c.name for c in all_codecs() if c.role == COMPRESSOR and c.supported)


def by_hdf5_id(fid: int) -> Codec | None:
    """The codec of an HDF5 filter id, or None."""
    return _BY_ID.get(fid)


def by_reductionist(cid: Any) -> Codec | None:
    """The codec that decodes Reductionist compression id ``cid`` on the server, or None."""
    for codec in all_codecs():
        if cid in codec.reductionist:
            return codec
    return None


def lookup(item: Any) -> Codec:
    """The codec of one filter JSON item (by class, id or name) or of a name.

    Raises UnsupportedFilterError for unknown filters.
    """
    if isinstance(item, str):
        codec = _BY_NAME.get(item.lower())
    elif isinstance(item, dict):
        codec = _BY_CLASS.get(item.get("class", "")) or _BY_ID.get(item.get("id", -1))
        raw = item.get("name")
        if codec is None and isinstance(raw, str):
            codec = _BY_NAME.get(raw.lower())
    else:
        raise UnsupportedFilterError(f"filter must be an object, got {item!r}")
    if codec is None:
        known = sorted(c.name for c in all_codecs())
        raise UnsupportedFilterError(f"unknown filter {item!r}; known: {known}")
    return codec


def compressor(name: Any) -> Codec:
    """The supported compressor called ``name`` (``compression=``); ValueError otherwise."""
    try:
        codec = lookup(str(name))
    except UnsupportedFilterError:
        codec = None
    if codec is None or codec.role != COMPRESSOR or not codec.supported:
        raise ValueError(f"compression {name!r} is not one of {compressors()}")
    return codec
