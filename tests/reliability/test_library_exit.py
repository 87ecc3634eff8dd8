"""A program that uses h5dask as a library ends with exit status 0, every time.

Such a program used to print its correct result and then die with SIGABRT (134) in a
few runs out of a hundred: an obstore (tokio) thread handing the last GET's result to
asyncio took the GIL back while the interpreter was finalizing. h5dask's ``atexit``
shutdown of its I/O loop (``h5dask/storage/sync.py``, ``_shut_down``) waits for such
hand-offs. Here ``library_exit_reader.py`` (one S3 GET from SeaweedFS, then the end of
the program) runs 150 times, 8 at a time under ``nice``, next to a process spinning on
a core, and every run must exit 0 having printed its result.

Measured on a 2-core machine: with the handler unregistered
(``H5DASK_TEST_WITHOUT_EXIT_HANDLER=1`` passes ``--without-exit-handler``), 6 runs in 100
aborted; a CI run of 150 then misses the regression with probability 0.94**150 < 1e-4
(at the lowest rate seen, 2 in 100: 0.98**150 = 5 %). With the handler: 0 in 300.

A longer variant (1000 runs, and ``h5dask.File`` reads) is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_faults import record_figures

import h5dask

READER = Path(__file__).with_name("library_exit_reader.py")
CI_RUNS, SLOW_RUNS = 150, 1000
PARALLEL = 8
DOMAIN_URL = "s3://h5dask-test/library-exit/tree.h5"
FILE_READ = """
import json, sys, h5dask
with h5dask.File(sys.argv[1], storage_options=json.loads(sys.argv[2])) as f:
    print("read", float(f["grp/x"][...].sum()))
"""


@pytest.fixture(scope="module")
def domain(seaweedfs: Any) -> str:
    with h5dask.File(DOMAIN_URL, "w", storage_options=seaweedfs.storage_options()) as f:
        f.create_dataset("grp/x", data=np.arange(100.0), chunks=(10,), compression="gzip")
    return DOMAIN_URL


def run_program(program: list[str], url: str, options: dict[str, Any]
                ) -> tuple[int, str, str]:
    cmd = ["nice", "-n", "19", sys.executable, *program, url, json.dumps(options)]
    if os.environ.get("H5DASK_TEST_WITHOUT_EXIT_HANDLER"):
        cmd.append("--without-exit-handler")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


def exit_codes_of_many_runs(runs: int, program: list[str], url: str, options: dict[str, Any],
                            expected: str) -> tuple[Counter, list]:
    """Counts of exit codes, and the runs that did not exit 0 printing ``expected``."""
    outcomes: Counter = Counter()
    wrong = []
    with ThreadPoolExecutor(PARALLEL) as pool:
        for code, out, err in pool.map(lambda _: run_program(program, url, options),
                                       range(runs)):
            outcomes[code] += 1
            if code != 0 or expected not in out:
                wrong.append((code, out[-300:], err[-300:]))
    return outcomes, wrong


def test_library_program_exits_0(seaweedfs: Any, domain: str, cpu_load: None) -> None:
    outcomes, wrong = exit_codes_of_many_runs(
        CI_RUNS, [str(READER)], f"{domain}/.domain.json", seaweedfs.storage_options(), "read ")
    record_figures("library_exit_codes", {f"exit {k}": v for k, v in outcomes.items()})
    assert not wrong, (outcomes, wrong[:3])


@pytest.mark.slow
def test_library_program_exits_0_slow(seaweedfs: Any, domain: str, cpu_load: None) -> None:
    options = seaweedfs.storage_options()
    outcomes, wrong = exit_codes_of_many_runs(
        SLOW_RUNS, [str(READER)], f"{domain}/.domain.json", options, "read ")
    assert not wrong, (outcomes, wrong[:3])
    outcomes, wrong = exit_codes_of_many_runs(
        SLOW_RUNS // 2, ["-c", FILE_READ], domain, options, "read 4950.0")
    assert not wrong, (outcomes, wrong[:3])


class SlowServer:
    """Answers every GET with 1000 bytes after 0-0.3 s (random): the requests a program
    leaves behind are still running when it ends."""

    def __init__(self) -> None:
        import random
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                time.sleep(random.uniform(0, 0.3))
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"x" * 1000)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client gone at exit resets its connections

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


EXIT_WITH_A_TASK_LEFT = """
import asyncio, concurrent.futures, importlib, threading
sync = importlib.import_module("h5dask.storage.sync")  # the module, not its function

started = threading.Event()
async def forever():
    started.set()
    await asyncio.Event().wait()  # a GET that never answers

future = concurrent.futures.Future()
sync.launch([(future, forever)])
assert started.wait(10)
counted = []
cancel = sync._cancel_pending
sync._cancel_pending = lambda loop: counted.append(cancel(loop)) or counted[-1]
sync._shut_down()
print("cancelled", future.cancelled(), "count", counted)
"""


def test_exit_cancels_a_task_left_on_the_io_loop() -> None:
    """Deterministic: a never-ending task left on h5dask's I/O loop is cancelled by the
    exit handler (``_shut_down`` -> ``_cancel_pending``), which counts it. Fails when the
    cancel is skipped (the task is then left pending and nothing is counted)."""
    proc = subprocess.run([sys.executable, "-c", EXIT_WITH_A_TASK_LEFT],
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = proc.stdout.split()
    assert words[:2] == ["cancelled", "True"], proc.stdout
    assert json.loads(proc.stdout.split("count", 1)[1])[0] >= 1, proc.stdout


@pytest.mark.slow
def test_library_program_that_ends_with_gets_in_flight_exits_0(cpu_load: None) -> None:
    """GETs still running at exit are cancelled by the exit handler before the loop stops
    (``_cancel_pending``): before, their tokio threads took the GIL to hand a result over
    while the interpreter finalized, and the process died with SIGSEGV/SIGABRT after a
    correct program (measured without the cancel: 3 in 40 runs, 1 in 40, and this test 1
    SIGSEGV in 80; with it: 0 in 60 and 0 in 80). Not under nice: it hid the crash.
    Probabilistic (it passes without the cancel in most runs): the cancel itself is
    proven by ``test_exit_cancels_a_task_left_on_the_io_loop``; this one is kept, marked
    slow, as the only end-to-end check that real obstore GETs in flight exit 0."""
    slow = SlowServer()
    try:
        outcomes: Counter = Counter()
        wrong = []
        program = Path(__file__).with_name("library_exit_in_flight.py")

        def run(_: int) -> tuple[int, str, str]:
            proc = subprocess.run([sys.executable, str(program), slow.url],
                                  capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL)
            return proc.returncode, proc.stdout, proc.stderr

        with ThreadPoolExecutor(PARALLEL) as pool:
            for code, out, err in pool.map(run, range(80)):
                outcomes[code] += 1
                if code != 0 or "left 20 GETs in flight" not in out:
                    wrong.append((code, out[-300:], err[-300:]))
        assert not wrong, (outcomes, wrong[:3])
    finally:
        slow.server.shutdown()
        slow.server.server_close()

