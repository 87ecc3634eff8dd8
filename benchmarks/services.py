"""The servers a benchmark run needs, all on loopback: SeaweedFS (S3), HSDS on the same
bucket, and h5dask's active-storage server. Each is stopped by its own process id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from h5dask.services.seaweedfs import SeaweedFS

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "h5dask-bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ActiveServer:
    """``python -m h5dask.active.server`` as a subprocess on a free loopback port, allowed
    to read ``upstream``; ``routes`` maps an origin clients name to the one fetched
    (``--upstream-route``)."""

    def __init__(self, upstream: str, max_in_flight: int = 64,
                 max_object_size: int = 64 * 2**20, log_level: str = "WARNING",
                 routes: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.routes = dict(routes or {})
        self.log_level = log_level
        self.max_in_flight = max_in_flight
        self.max_object_size = max_object_size
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = Path(tempfile.mkstemp(prefix="h5dask-bench-active-", suffix=".log")[1])

    def start(self) -> ActiveServer:
        port = _free_port()
        cmd = [sys.executable, "-m", "h5dask.active.server", "--host", "127.0.0.1",
               "--port", str(port), "--allow-upstream", self.upstream,
               "--max-object-size", str(self.max_object_size),
               "--max-in-flight", str(self.max_in_flight), "--log-level", self.log_level]
        for named, fetched in self.routes.items():
            cmd += ["--upstream-route", f"{named}={fetched}"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"active server exited:\n{self.log_path.read_text()}")
            try:
                with opener.open(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("active server not healthy after 30 s")
            time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (for its CPU seconds)."""
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self.log_path.unlink(missing_ok=True)


def start_hsds(s3: SeaweedFS, bucket: str, dn_count: int = 2, endpoint: str | None = None
               ) -> Any:
    """HSDS 1.0.2 serving ``bucket`` of ``s3`` (through ``endpoint``, e.g. a latency
    proxy, if given), with ``/home/admin/`` created."""
    from h5dask.services.hsds import HSDSServer

    server = HSDSServer.on_seaweedfs(s3, bucket, dn_count=dn_count, log_level="ERROR")
    if endpoint:
        server.s3_endpoint = endpoint
    server.start()
    try:
        server.make_home_folders()
    except BaseException:
        server.stop()
        raise
    return server


class Services:
    """SeaweedFS always; HSDS and the active server on demand; all stopped on exit."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self.s3 = SeaweedFS()
        self.hsds: Any = None
        self.active: ActiveServer | None = None
        self.endpoint_override: str | None = None  # e.g. a latency proxy in front of S3

    def __enter__(self) -> Services:
        self.s3.start()
        self._stack.callback(self.s3.stop)
        self.s3.create_bucket(BUCKET)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def endpoint(self) -> str:
        """Where clients send S3 requests: SeaweedFS, or the proxy in front of it."""
        return self.endpoint_override or self.s3.endpoint

    @property
    def storage_options(self) -> dict[str, Any]:
        options = self.s3.storage_options()
        options["client_kwargs"] = {**options["client_kwargs"], "endpoint_url": self.endpoint}
        return options

    def obstore_config(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "access_key_id": self.s3.access_key,
                "secret_access_key": self.s3.secret_key, "region": self.s3.region}

    def obstore(self, prefix: str | None = None, **client: Any) -> Any:
        """A fresh obstore S3Store on the bench bucket (under ``prefix``)."""
        from obstore.store import S3Store

        return S3Store(BUCKET, prefix=prefix, config=self.obstore_config(),
                       client_options={"allow_http": True, **client})

    def start_hsds(self) -> Any:
        if self.hsds is None:
            self.hsds = start_hsds(self.s3, BUCKET)
            self._stack.callback(self.hsds.stop)
        return self.hsds

    def restart_hsds(self, endpoint: str | None) -> Any:
        """HSDS again, reading storage through ``endpoint`` (None: SeaweedFS itself)."""
        if self.hsds is not None:
            self.hsds.stop()
        self.hsds = start_hsds(self.s3, BUCKET, endpoint=endpoint)
        self._stack.callback(self.hsds.stop)
        return self.hsds

    def start_active(self) -> ActiveServer:
        if self.active is None:
            self.active = ActiveServer(self.s3.endpoint).start()
            self._stack.callback(self.active.stop)
        return self.active
