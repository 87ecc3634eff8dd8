"""A load that dies: the helper process of test_resume.py (not a test module).

``python killed_load.py SRC URL OPTIONS_JSON N`` runs ``load_file(SRC, URL)`` and
SIGKILLs itself once N chunk objects have been written, as a machine that loses power
or a job killed by its scheduler would: no cleanup runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from h5dask.ingest import load_file
from h5dask.storage.base import ObjectStore

_put = ObjectStore.put
written = 0


async def put_then_maybe_die(self: ObjectStore, key: str, data: Any, *,
                             kind: str = "chunk") -> None:
    global written
    await _put(self, key, data, kind=kind)
    if kind == "chunk":
        written += 1
        if written >= int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    ObjectStore.put = put_then_maybe_die  # type: ignore[method-assign]
    load_file(sys.argv[1], sys.argv[2], storage_options=json.loads(sys.argv[3]),
              progress=False, max_workers=2)
