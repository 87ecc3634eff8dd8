"""Run a real HSDS 1.0.2 server (service node + data nodes) for interoperability tests
and benchmarks.

HSDS's own launcher (the ``hsds`` script, ``hsds/hsds_app.py``) always puts the
data nodes on TCP ports 6101, 6102, ...: that is hard-coded (``dn_port = 6101``)
and ``hsds --help`` has no option for it, so two ``hsds`` instances cannot run at
once. The node program it launches, ``hsds-node``, takes its port from
``--dn_urls`` / ``--node_number`` (``--sn_url`` for the service node), so the
default ``launcher="nodes"`` starts the nodes itself, exactly as ``hsds_app.py``
does, on free ports: several servers can coexist. ``launcher="hsds"`` runs the
real ``hsds`` script instead (data nodes on 6101.., one instance at a time).

Storage is either POSIX (``root_dir``; objects land in ``root_dir/bucket/...``)
or S3 (``s3_endpoint`` + credentials, passed through the environment).

Example::

    server = HSDSServer(root_dir=tmp, bucket="hsdsbucket").start()
    server.make_home_folders()
    with h5pyd.File("/home/admin/x.h5", "w", **server.h5pyd_kwargs()) as f:
        f["x"] = [1, 2, 3]
    keys = server.wait_for_keys(domain="/home/admin/x.h5")  # {key: size}
    server.stop()
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Self

from .reaper import end_watch, watch

# Environment variables HSDS's config would pick up from the test process.
_ENV_DROP_PREFIXES = ("AWS_", "AZURE_", "HS_", "HSDS_")
_ENV_DROP = {
    "BUCKET_NAME",
    "ROOT_DIR",
    "CONFIG_DIR",
    "CONFIG_OVERRIDE_PATH",
    "PASSWORD_FILE",
    "LOG_LEVEL",
    "DN_PORT",
    "SN_PORT",
}
_CLI_DN_PORT = 6101  # hard-coded in hsds/hsds_app.py


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install hsds==1.0.2 in this environment")
    return str(path)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on all interfaces (HSDS binds 0.0.0.0)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class HSDSServer:
    """A running HSDS: ``endpoint``, ``username``, ``password``, ``bucket`` (+ ``root_dir``).

    Args:
        bucket: the default bucket; for POSIX the directory ``root_dir/bucket``.
        root_dir: POSIX storage root (created if missing). Mutually exclusive with S3.
        s3_endpoint, aws_access_key_id, aws_secret_access_key, aws_region: S3 storage.
        dn_count: number of data nodes.
        launcher: ``"nodes"`` (free ports, default) or ``"hsds"`` (the ``hsds`` script,
            data nodes fixed on 6101..; only one such instance at a time).
        work_dir: directory for the log (``hsds.log``) and the nodes' cwd; a temporary
            directory, removed by :meth:`stop`, when omitted.
    """

    def __init__(
        self,
        *,
        bucket: str,
        root_dir: str | os.PathLike[str] | None = None,
        s3_endpoint: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_region: str = "us-east-1",
        username: str = "admin",
        password: str = "admin",
        dn_count: int = 1,
        launcher: Literal["nodes", "hsds"] = "nodes",
        log_level: str = "INFO",
        work_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if (root_dir is None) == (s3_endpoint is None):
            raise ValueError("give exactly one of root_dir (POSIX) or s3_endpoint (S3)")
        self.bucket = bucket
        self.root_dir = Path(root_dir) if root_dir is not None else None
        self.s3_endpoint = s3_endpoint
        self.aws_access_key_id = aws_access_key_id
        self.aws_secret_access_key = aws_secret_access_key
        self.aws_region = aws_region
        self.username = username
        self.password = password
        self.dn_count = dn_count
        self.launcher = launcher
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self._own_dir = work_dir is None
        self.sn_port: int | None = None
        self.dn_ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._watcher: subprocess.Popen[bytes] | None = None  # see h5dask.services.reaper
        self._s3_client: Any = None

    @classmethod
    def on_seaweedfs(cls, seaweedfs: Any, bucket: str, **kwargs: Any) -> HSDSServer:
        """An (unstarted) HSDS storing in ``bucket`` of a running SeaweedFS."""
        return cls(
            bucket=bucket,
            s3_endpoint=seaweedfs.endpoint,
            aws_access_key_id=seaweedfs.access_key,
            aws_secret_access_key=seaweedfs.secret_key,
            aws_region=seaweedfs.region,
            **kwargs,
        )

    # -- properties ----------------------------------------------------------------

    @property
    def storage(self) -> Literal["posix", "s3"]:
        return "posix" if self.root_dir is not None else "s3"

    @property
    def endpoint(self) -> str:
        """Service-node URL for h5pyd, ``http://127.0.0.1:PORT``."""
        if self.sn_port is None:
            raise RuntimeError("HSDS is not started")
        return f"http://127.0.0.1:{self.sn_port}"

    @property
    def pid(self) -> int | None:
        """Process-group leader: the ``hsds`` script or the service node."""
        return self._procs[0].pid if self._procs else None

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    @property
    def log_path(self) -> Path | None:
        return self.work_dir / "hsds.log" if self.work_dir is not None else None

    def h5pyd_kwargs(self) -> dict[str, str]:
        """``endpoint``/``username``/``password`` for ``h5pyd.File`` and ``h5pyd.Folder``."""
        return {"endpoint": self.endpoint, "username": self.username, "password": self.password}

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start the nodes and wait until ``GET /about`` answers 200 (no-op if running)."""
        if self.running:
            return self
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="h5dask-hsds-"))
            self._own_dir = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.root_dir is not None:
            (self.root_dir / self.bucket).mkdir(parents=True, exist_ok=True)
        try:
            for _ in range(3):
                try:
                    self._launch()
                    return self
                except _PortTaken:
                    continue
            raise RuntimeError("HSDS: its ports kept being taken by others (3 tries)")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """End the whole process group; wait until the nodes' ports are free again."""
        self._terminate(timeout)
        if self._own_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.root_dir if self.root_dir is not None else self.s3_endpoint
        state = self.endpoint if self.running else "stopped"
        return f"HSDSServer({state}, {self.storage}:{where}, bucket={self.bucket!r})"

    # -- storage helpers -----------------------------------------------------------

    def make_home_folders(self) -> None:
        """Create the folders ``/home/`` and ``/home/admin/`` (``/home/<username>/``)."""
        import h5pyd

        for folder in ("/home/", f"/home/{self.username}/"):
            try:
                h5pyd.Folder(folder, mode="r", **self.h5pyd_kwargs())
            except OSError:
                h5pyd.Folder(folder, mode="w", **self.h5pyd_kwargs())

    def flush(self, domain: str, *, rescan: bool = False) -> None:
        """Ask HSDS to write the dirty objects of ``domain`` to storage now.

        ``rescan=True`` also runs the domain scan at once, which writes
        ``db/<root>/.info.json`` (otherwise written ~10 s after the last change).
        """
        self._request("PUT", "/", {"domain": domain}, {"flush": True})
        if rescan:
            self._request("PUT", "/", {"domain": domain}, {"rescan": True})

    def list_keys(self, prefix: str = "") -> dict[str, int]:
        """All object keys in the bucket (under ``prefix``) with their sizes."""
        return {k: v[0] for k, v in self._listing(prefix).items()}

    def read_key(self, key: str) -> bytes:
        """The bytes of one stored object."""
        if self.root_dir is not None:
            return (self.root_dir / self.bucket / key).read_bytes()
        return self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def wait_for_keys(
        self,
        required: Iterable[str] = (),
        *,
        domain: str | None = None,
        rescan: bool = False,
        prefix: str = "",
        quiet: float = 2.0,
        timeout: float = 60.0,
    ) -> dict[str, int]:
        """Wait until storage has settled; return ``{key: size}``.

        HSDS writes objects lazily (about 1 s after the last change, chunks too).
        If ``domain`` is given, it is flushed first (see :meth:`flush`). Then the
        bucket listing is polled until every pattern in ``required``
        (``fnmatch`` patterns, e.g. ``"db/*/.dataset.json"``) matches a key and
        nothing (keys, sizes, modification) changed for ``quiet`` seconds.
        """
        if domain is not None:
            self.flush(domain, rescan=rescan)
        required = list(required)
        deadline = time.monotonic() + timeout
        last = self._listing(prefix)
        stable_since = time.monotonic()
        while True:
            time.sleep(0.25)
            now = self._listing(prefix)
            if now != last:
                last, stable_since = now, time.monotonic()
            missing = [p for p in required if not fnmatch.filter(last, p)]
            if not missing and time.monotonic() - stable_since >= quiet:
                return {k: v[0] for k, v in last.items()}
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"storage not settled after {timeout:g} s; missing {missing}, "
                    f"keys: {sorted(last)}"
                )

    # -- internals -----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _ENV_DROP and not k.startswith(_ENV_DROP_PREFIXES)
        }
        env["BUCKET_NAME"] = self.bucket
        env["PYTHONUNBUFFERED"] = "1"
        if self.s3_endpoint is not None:
            env["AWS_S3_GATEWAY"] = self.s3_endpoint
            env["AWS_REGION"] = self.aws_region
            if self.aws_access_key_id is not None:
                env["AWS_ACCESS_KEY_ID"] = self.aws_access_key_id
            if self.aws_secret_access_key is not None:
                env["AWS_SECRET_ACCESS_KEY"] = self.aws_secret_access_key
        return env

    def _commands(self) -> list[list[str]]:
        """One command (``hsds``) or the sn + dn node commands, as hsds_app.py builds them."""
        assert self.sn_port is not None and self.log_path is not None
        if self.launcher == "hsds":
            cmd = [_bin("hsds"), "--bucket_name", self.bucket, "--port", str(self.sn_port)]
            cmd += ["--count", str(self.dn_count), "--logfile", str(self.log_path)]
            cmd += ["--hs_username", self.username, "--hs_password", self.password]
            cmd += ["--loglevel", self.log_level, "--host", "127.0.0.1"]
            if self.root_dir is not None:
                cmd += ["--root_dir", str(self.root_dir)]
            return [cmd]
        node = [sys.executable, _bin("hsds-node")]
        dn_urls = ",".join(f"http://127.0.0.1:{p}" for p in self.dn_ports)
        common = [
            "--standalone",
            f"--dn_urls={dn_urls}",
            f"--hsds_endpoint={self.endpoint}",
            f"--bucket_name={self.bucket}",
            f"--log_level={self.log_level}",
            f"--config_dir={self.work_dir}",
        ]
        if self.root_dir is not None:
            common.append(f"--root_dir={self.root_dir.resolve()}")
        sn = node + ["--node_type=sn", "--log_prefix=sn ", f"--sn_url={self.endpoint}"]
        sn += [f"--hs_username={self.username}", f"--admin_user={self.username}"]
        sn += [f"--hs_password={self.password}", "--password_file="]
        cmds = [sn + common]
        for i in range(self.dn_count):
            dn = node + ["--node_type=dn", f"--log_prefix=dn{i + 1} ", f"--node_number={i}"]
            cmds.append(dn + common)
        return cmds

    def _launch(self) -> None:
        assert self.log_path is not None
        if self.launcher == "hsds":
            self.dn_ports = [_CLI_DN_PORT + i for i in range(self.dn_count)]
            self._wait_ports_free(self.dn_ports, 15.0)
            (self.sn_port,) = _free_ports(1)
        else:
            self.sn_port, *self.dn_ports = _free_ports(1 + self.dn_count)
            # hsds-node sorts dn_urls as strings; keep node_number i <-> dn_ports[i]
            self.dn_ports.sort(key=lambda p: f"http://127.0.0.1:{p}")
        env = self._env()
        with open(self.log_path, "ab") as log:
            for cmd in self._commands():
                log.write(f"\n# {' '.join(cmd)}\n".encode())
                log.flush()
                # One new process group for all nodes, led by the first one, so that
                # stop() can end everything (also the hsds script's children) with
                # killpg. (Not a new session: others could not join its group.)
                leader = self._procs[0].pid if self._procs else 0
                self._procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=self.work_dir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        process_group=leader,
                    )
                )
        # the nodes survive this process's death in their own group: the watcher ends
        # them (and removes our temporary directory) when this process ends, however
        self._watcher = watch(self._procs[0].pid,
                              str(self.work_dir) if self._own_dir else None)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        urls = [self.endpoint + "/about"]
        urls += [f"http://127.0.0.1:{p}/info" for p in self.dn_ports]
        while True:
            if not self.running:
                tail = self._log_tail()
                self._terminate()
                if "address already in use" in tail.lower():
                    raise _PortTaken()
                raise RuntimeError(f"HSDS exited at start; end of its log:\n{tail}")
            if all(self._status(u) == 200 for u in urls):
                return
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self._terminate()
                raise RuntimeError(
                    f"HSDS not ready after {self.start_timeout:g} s; end of its log:\n{tail}"
                )
            time.sleep(0.3)

    def _terminate(self, timeout: float = 10.0) -> None:
        procs, self._procs = self._procs, []
        if procs:
            pgid = procs[0].pid
            self._signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.1)
            # SIGKILL whatever is left of the group (incl. children of the hsds script)
            self._signal_group(pgid, signal.SIGKILL)
            for p in procs:
                p.wait()
        watcher, self._watcher = self._watcher, None
        end_watch(watcher)
        ports = ([self.sn_port] if self.sn_port else []) + self.dn_ports
        self._wait_ports_free(ports, timeout)
        self.sn_port, self.dn_ports = None, []

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _wait_ports_free(ports: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(_port_free(p) for p in ports):
            if time.monotonic() > deadline:
                busy = [p for p in ports if not _port_free(p)]
                raise RuntimeError(f"ports {busy} still busy (another HSDS running?)")
            time.sleep(0.2)

    def _status(self, url: str) -> int | None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=2) as rsp:
                return rsp.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return None

    def _request(self, method: str, path: str, params: dict[str, str], body: Any) -> Any:
        url = f"{self.endpoint}{path}?{urllib.parse.urlencode(params)}"
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        req = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=120) as rsp:
            data = rsp.read()
        return json.loads(data) if data else None

    def _listing(self, prefix: str = "") -> dict[str, tuple[int, Any]]:
        """``{key: (size, version)}``; version is mtime (POSIX) or ETag (S3)."""
        out: dict[str, tuple[int, Any]] = {}
        if self.root_dir is not None:
            base = self.root_dir / self.bucket
            for dirpath, _, files in os.walk(base):
                for name in files:
                    path = Path(dirpath, name)
                    key = path.relative_to(base).as_posix()
                    if key.startswith(prefix):
                        try:
                            st = path.stat()
                        except FileNotFoundError:
                            continue  # replaced while listing
                        out[key] = (st.st_size, st.st_mtime_ns)
            return out
        pages = self._s3().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (obj["Size"], obj.get("ETag"))
        return out

    def _s3(self) -> Any:
        client = self._s3_client
        if client is None:
            import botocore.config
            import botocore.session

            client = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=self.s3_endpoint,
                region_name=self.aws_region,
                aws_access_key_id=self.aws_access_key_id,
                aws_secret_access_key=self.aws_secret_access_key,
                config=botocore.config.Config(s3={"addressing_style": "path"}),
            )
            self._s3_client = client
        return client

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class _PortTaken(Exception):
    """A node died at start because its port was taken meanwhile."""
