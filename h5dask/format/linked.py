"""The byte arithmetic of HSDS's linked layouts (chunks inside an HDF5 file).

HSDS ("HDF5 as a single object", ``docs/design/single_object/SingleObject.md``) knows
three layouts that point into an HDF5 file instead of at chunk objects:

- ``H5D_CHUNKED_REF``: ``"chunks": {"i_j": [offset, size]}`` inline in the layout;
- ``H5D_CHUNKED_REF_INDIRECT``: ``"chunk_table": "d-..."``, an anonymous dataset with one
  element per chunk (:data:`CHUNK_TABLE_DTYPE`, plus ``file_uri`` when the layout has
  none), with the dataset's rank and shape ``ceil(shape / dims)``;
- ``H5D_CONTIGUOUS_REF``: ``"offset"`` and ``"size"`` of a contiguous dataset, read in
  virtual chunks (:func:`contiguous_ranges`).

Reading them (resolving ``file_uri``, the chunk table) is :mod:`h5dask.sources`.

>>> contiguous_ranges((10, 4), 2, (5, 4), offset=100, size=80)
[((0, 0), 100, 40), ((1, 0), 140, 40)]
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import MetadataError
from .chunks import ChunkGrid

#: the element type of an H5D_CHUNKED_REF_INDIRECT chunk table (HSDS, hsload --link)
CHUNK_TABLE_DTYPE = np.dtype([("offset", "<i8"), ("size", "<i4")])
#: h5dask's own layout key: the size in bytes of the layout's ``file_uri`` when it was
#: linked. The offsets are only true of that file; a rewritten file (another size) may
#: hold other data there. HSDS ignores the key; domains without it are not checked.
LINKED_FILE_SIZE_KEY = "h5dask_file_size"
#: h5dask's own layout key: the version of the file when it was linked, as its store
#: tells it (S3: the ETag; a local file: its modification and change times and inode).
#: Another version means the file was written since: readers then check the layout
#: against the file's own metadata before reading (:mod:`h5dask.linked_files`).
LINKED_FILE_VERSION_KEY = "h5dask_file_version"
#: h5dask's own layout key: the dataset's path inside the linked file, where that check
#: finds it
LINKED_FILE_PATH_KEY = "h5dask_file_path"


def contiguous_ranges(shape: tuple[int, ...], itemsize: int, chunks: tuple[int, ...],
                      offset: int, size: int) -> list[tuple[tuple[int, ...], int, int]]:
    """(chunk index, file offset, byte count) of each virtual chunk of a contiguous dataset
    stored at ``offset`` (``size`` bytes): HSDS's arithmetic for H5D_CONTIGUOUS_REF. The
    chunks must be contiguous byte ranges (1s, then one split dimension, then whole
    extents), as :func:`~h5dask.format.metadata._contiguous_chunks` makes them.

    >>> contiguous_ranges((3,), 4, (2,), offset=0, size=12)
    [((0,), 0, 8), ((1,), 8, 4)]
    """
    if size <= 0 or math.prod(shape) == 0:
        return []
    rank = len(shape)
    split = next((d for d in range(rank) if chunks[d] != 1), rank - 1)
    if any(chunks[d] != shape[d] for d in range(split + 1, rank)):
        raise MetadataError("layout", f"virtual chunks {chunks} of shape {shape} are not "
                                      "contiguous byte ranges")
    strides = [itemsize * math.prod(shape[d + 1:]) for d in range(rank)]
    grid = ChunkGrid(tuple(shape), tuple(chunks))
    end = offset + size
    out = []
    for index in grid.indices():
        start = offset + sum(i * c * s for i, c, s in zip(index, chunks, strides))
        # an edge chunk is read clipped (HSDS reads a whole chunk's worth of bytes there,
        # running into the next rows, and drops them; h5dask does not fetch them)
        nbytes = itemsize * math.prod(b.stop - b.start for b in grid.chunk_bounds(index))
        length = min(nbytes, end - start)
        if length > 0:
            out.append((index, start, length))
    return out


__all__ = ["CHUNK_TABLE_DTYPE", "LINKED_FILE_PATH_KEY", "LINKED_FILE_SIZE_KEY",
           "LINKED_FILE_VERSION_KEY", "contiguous_ranges"]
