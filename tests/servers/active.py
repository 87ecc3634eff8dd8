"""The active-storage server as a real subprocess for the tests: on a free loopback port,
with this checkout first on its PYTHONPATH, its output in a log file, waited for until
``/healthz`` answers, and stopped by its pid (SIGTERM, then SIGKILL).

>>> proc, url = start_active_server(tmp / "server.log", ["--max-in-flight", "4"])  # doctest: +SKIP
>>> stop_process(proc)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: urllib without any proxy from the environment (the server is on loopback)
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: ``python -m h5dask.active.server``; the console script is ``h5dask serve-active``
MODULE_COMMAND = (sys.executable, "-m", "h5dask.active.server")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the child if pytest dies without cleaning up."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_active_server(log_path: Path, args: list[str],
                        command: tuple[str, ...] | list[str] = MODULE_COMMAND,
                        ) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``command --host 127.0.0.1 --port P *args`` on a free port ``P``, wait for
    its ``/healthz`` (RuntimeError with its log if it exits or is not healthy in 30 s)
    and return the process and its URL."""
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log_path)
    except BaseException:
        stop_process(proc)
        raise
    return proc, url


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait (30 s at most) until the server at ``url`` answers ``/healthz`` with 200."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"active server exited at start:\n{log_path.read_text()}")
        try:
            with OPENER.open(url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:  # refused, reset or timed out: not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"active server not healthy after 30 s:\n{log_path.read_text()}")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process by its pid, SIGKILL it if it does not exit in time."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def serve_in_thread(app: Any, port: int, name: str) -> Iterator[None]:
    """Serve an aiohttp ``app`` on 127.0.0.1:``port`` from a background thread's event
    loop for the duration (test stubs standing in for an upstream or a server)."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    assert started.wait(10), f"{name} did not start"
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


__all__ = ["OPENER", "PROJECT_ROOT", "free_port", "serve_in_thread", "start_active_server",
           "stop_process", "wait_healthy"]
