"""One of two loads run at once: the helper process of test_concurrent_loads.py (not a
test module).

``python concurrent_load.py SRC URL OPTIONS_JSON DELAY [GATE]`` runs
``load_file(SRC, URL)`` with every chunk PUT DELAY seconds slower (a slow store, so that
the other load meets this one) and, given a GATE path, held until that file exists (so a
test decides when this load may go on), and prints one line: ``published``,
``refused <message>`` (another run holds the lease) or ``exists <message>`` (the other
run published first).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from h5dask.errors import DomainExistsError, LoadInProgressError
from h5dask.ingest import load_file
from h5dask.storage.base import ObjectStore

_put = ObjectStore.put


async def slow_put(self: ObjectStore, key: str, data: Any, *, kind: str = "chunk") -> None:
    if kind == "chunk":
        await asyncio.sleep(float(sys.argv[4]))
        while len(sys.argv) > 5 and not Path(sys.argv[5]).exists():
            await asyncio.sleep(0.02)
    await _put(self, key, data, kind=kind)


if __name__ == "__main__":
    ObjectStore.put = slow_put  # type: ignore[method-assign]
    try:
        load_file(sys.argv[1], sys.argv[2], storage_options=json.loads(sys.argv[3]),
                  progress=False, max_workers=2)
    except LoadInProgressError as exc:
        print("refused", exc, flush=True)
    except DomainExistsError as exc:
        print("exists", exc, flush=True)
    else:
        print("published", flush=True)
