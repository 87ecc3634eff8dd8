"""Stop a server when the process that started it ends, however it ends.

A server launched in its own process group survives its parent's death: a notebook
kernel killed at shutdown, a test run interrupted, a script that never called ``stop``.
Next to each server runs this small watcher (``python -m h5dask.services.reaper PGID
[FOLDER]``), whose stdin is a pipe held only by the parent. When the parent closes it,
or dies and the kernel closes it, the watcher reads end-of-file, terminates the group
and removes ``FOLDER`` (the server's temporary directory).

Example::

    watcher = subprocess.Popen([sys.executable, "-m", "h5dask.services.reaper",
                                str(server.pid), tmpdir], stdin=subprocess.PIPE,
                               start_new_session=True)
    ...
    watcher.stdin.close()  # or the parent exits: the server is stopped
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_group(pgid: int, alive: Callable[[], bool], timeout: float = 2.0) -> None:
    """SIGTERM process group ``pgid``, SIGKILL it if ``alive()`` after ``timeout`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive():
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def watch(pgid: int, folder: str | None = None) -> subprocess.Popen[bytes]:
    """Start the watcher of process group ``pgid``; closing its stdin (or exiting) stops
    the group and removes ``folder``."""
    cmd = [sys.executable, "-m", __name__, str(pgid)] + ([folder] if folder else [])
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def end_watch(watcher: subprocess.Popen[bytes] | None) -> None:
    """End a watcher :func:`watch` started, without its clean-up: its server is gone
    already, and a retried start reuses the directory."""
    if watcher is None:
        return
    watcher.terminate()
    watcher.wait()
    if watcher.stdin is not None:
        watcher.stdin.close()


def main(argv: Sequence[str]) -> None:
    pgid = int(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only end-of-file ends the watch
    sys.stdin.buffer.read()
    terminate_group(pgid, lambda: group_alive(pgid))
    if len(argv) > 1:
        shutil.rmtree(argv[1], ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
