"""The active-storage server (``h5dask serve-active``) against hostile clients.

* slowloris: connections trickling their request body do not hold the in-flight slots;
  a legitimate request is answered meanwhile and the tricklers get 400 RequestTimeout;
* memory: a burst of max-size ``select`` requests peaks at about in-flight x max object
  size over the idle server, and the server gives the memory back afterwards;
* log forging: control characters in a path (``%0A``) are escaped in the log;
* Content-Type: only JSON bodies are accepted (400 otherwise, as Reductionist), so a web
  page cannot post to the server without a CORS preflight.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
from servers.active import OPENER, start_active_server, stop_process
from test_active_server import Server, basic
from test_faults import record_figures

H5DASK = shutil.which("h5dask", path=str(Path(sys.executable).parent)) or "h5dask"
BUCKET = "active-attacks"
MAX_IN_FLIGHT = 8
MAX_OBJECT = 64 << 20  # the burst's objects are exactly this size (the default limit)
BODY_TIMEOUT = 4.0
MIB = 1 << 20
SETTLED_SLACK = 24 * MIB  # resident memory over the idle server once the burst is over


def vm(pid: int, field: str) -> int:
    """A ``Vm*`` figure of /proc/PID/status (VmRSS, VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.fixture(scope="module")
def server(seaweedfs: Any, tmp_path_factory: Any) -> Iterator[Server]:
    """``h5dask serve-active`` with 8 slots, 32 MiB objects and a short body deadline."""
    seaweedfs.create_bucket(BUCKET)
    s3 = seaweedfs.s3_client()
    small = np.arange(1024, dtype="<i4")
    s3.put_object(Bucket=BUCKET, Key="small.bin", Body=small.tobytes())
    s3.put_object(Bucket=BUCKET, Key="big.bin",
                  Body=np.arange(MAX_OBJECT // 4, dtype="<i4").tobytes())
    log_path = tmp_path_factory.mktemp("active-attacks") / "server.log"
    proc, url = start_active_server(log_path, [
        "--allow-upstream", seaweedfs.endpoint, "--max-in-flight", str(MAX_IN_FLIGHT),
        "--max-object-size", str(MAX_OBJECT), "--body-timeout", str(BODY_TIMEOUT),
        "--log-level", "INFO"], command=[H5DASK, "serve-active"])
    try:
        yield Server(url, proc, log_path, seaweedfs.endpoint, seaweedfs.access_key,
                     seaweedfs.secret_key, f"{seaweedfs.endpoint}/{BUCKET}/small.bin",
                     small.size)
    finally:
        stop_process(proc, timeout=10)


def read_http_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of the HTTP/1.1 response on ``sock`` (read until closed)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# -- slowloris -----------------------------------------------------------------------------
class Trickler(threading.Thread):
    """Sends a request's headers, then its body one byte every 0.5 s, until answered."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.answered = threading.Event()
        self.status: int | None = None
        self.body = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                sock.sendall(b"POST /v2/sum/ HTTP/1.1\r\nHost: active\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n")
                for _ in range(10000):
                    readable, _, _ = select.select([sock], [], [], 0.5)
                    if readable:
                        break
                    sock.sendall(b" ")
                self.status, self.body = read_http_response(sock)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.answered.set()


def test_slowloris_does_not_take_the_slots(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    tricklers = [Trickler(port) for _ in range(MAX_IN_FLIGHT)]
    for t in tricklers:
        t.start()
    time.sleep(0.5)  # every trickler has sent its headers and is sending its body
    status, payload = server.post("sum", server.body(), auth=server.auth)
    still_trickling = sum(not t.answered.is_set() for t in tricklers)
    assert status == 200, payload
    assert int(np.frombuffer(cbor2.loads(payload)["bytes"], "<i4")[0]) == sum(range(1024))
    for t in tricklers:
        assert t.answered.wait(60)
        assert t.error is None, t.error
        assert t.status == 400, (t.status, t.body)
        error = json.loads(t.body)["error"]
        assert error["message"].startswith("RequestTimeout"), error
    record_figures("active_slowloris", {"tricklers": len(tricklers),
                                        "legitimate_status": status,
                                        "tricklers_still_sending_when_answered":
                                            still_trickling})
    # the legitimate request was answered while the tricklers held their connections
    assert still_trickling == len(tricklers)


# -- memory ---------------------------------------------------------------------------------
def select_big(server: Server) -> int:
    body = {"interface_type": "s3", "url": f"{server.endpoint}/{BUCKET}/big.bin",
            "dtype": "int32", "shape": [MAX_OBJECT // 4]}
    status, payload = server.post("select", body, auth=server.auth, timeout=300)
    assert status == 200, payload[:300]
    reply = cbor2.loads(payload)
    values = np.frombuffer(reply["bytes"], dtype=reply["dtype"])
    assert values.size == MAX_OBJECT // 4 and values[-1] == MAX_OBJECT // 4 - 1
    return status


def test_burst_memory_is_bounded_and_given_back(server: Server) -> None:
    pid = server.proc.pid
    select_big(server)  # warm up: threads, connections, allocator
    time.sleep(0.5)
    baseline = vm(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS: the peak measured is the burst's
    with ThreadPoolExecutor(MAX_IN_FLIGHT) as pool:
        statuses = list(pool.map(lambda _: select_big(server), range(MAX_IN_FLIGHT)))
    peak = vm(pid, "VmHWM")
    settled = vm(pid, "VmRSS")
    for _ in range(50):  # the last request gives memory back when it ends: let it
        if settled <= baseline + SETTLED_SLACK:
            break
        time.sleep(0.1)
        settled = vm(pid, "VmRSS")
    figures = {"object_mib": MAX_OBJECT // MIB, "requests": MAX_IN_FLIGHT,
               "rss_baseline_mib": baseline // MIB, "rss_peak_mib": peak // MIB,
               "rss_settled_mib": settled // MIB,
               "peak_over_baseline_per_request":
                   round((peak - baseline) / MAX_IN_FLIGHT / MAX_OBJECT, 2)}
    record_figures("active_memory_burst", figures)
    assert statuses == [200] * MAX_IN_FLIGHT
    # about one object-sized buffer per request in flight (was 2.5 objects each here)
    assert peak - baseline <= MAX_IN_FLIGHT * MAX_OBJECT * 1.5 + 64 * MIB, figures
    # and back near where it started (was 56 MiB above it here)
    assert settled <= baseline + SETTLED_SLACK, figures


# -- log forging ------------------------------------------------------------------------------
def test_control_characters_in_the_path_are_escaped_in_the_log(server: Server) -> None:
    forged = "2026-01-01 00:00:00,000 INFO h5dask.active POST /v2/sum/ 200 FORGED"
    quoted = urllib.request.quote(forged)
    for path in (f"/v2/sum%0A{quoted}", f"/v2/sum%0D%0A{quoted}/", f"/healthz%0A{quoted}",
                 f"/v2/x%E2%80%A8{quoted}", f"/v2/x%1B[2K%0D{quoted}"):
        req = urllib.request.Request(server.url + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            OPENER.open(req, timeout=30)
        except urllib.error.HTTPError as err:
            assert err.code in (404, 405), err.code
    time.sleep(0.3)  # let the log lines land
    lines = server.log().splitlines()
    logged = [line for line in lines if "FORGED" in line]
    assert len(logged) == 5, logged
    assert not any(line.startswith("2026-01-01") for line in lines), logged
    for line in logged:
        assert " h5dask.active POST /" in line and "\x1b" not in line and "\r" not in line
    assert any("/v2/sum\\n2026-01-01" in line for line in logged), logged
    assert any("\\u2028" in line for line in logged), logged


# -- Content-Type -------------------------------------------------------------------------------
def raw_post(server: Server, content_type: str | None, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` to /v2/sum/ with exactly this Content-Type header (or none)."""
    port = int(server.url.rsplit(":", 1)[1])
    head = [b"POST /v2/sum/ HTTP/1.1", b"Host: active", b"Connection: close",
            b"Authorization: " + basic(*server.auth).encode(),
            b"Content-Length: %d" % len(body)]
    if content_type is not None:
        head.append(b"Content-Type: " + content_type.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        return read_http_response(sock)


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_non_json_bodies_get_400(server: Server, content_type: str | None) -> None:
    status, payload = raw_post(server, content_type, json.dumps(server.body()).encode())
    assert status == 400, payload[:300]  # Reductionist's JsonRejection
    assert "application/json" in json.loads(payload)["error"]["caused_by"][0]


def test_json_with_a_charset_is_accepted(server: Server) -> None:
    status, payload = raw_post(server, "application/json; charset=utf-8",
                               json.dumps(server.body()).encode())
    assert status == 200, payload[:300]
