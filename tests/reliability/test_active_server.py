"""The active-storage server under load and under attack.

* load: ``hey`` (Debian package ``hey``; ci/setup.sh installs it) sends a fixed number
  of reductions over loopback: no errors, the server's memory stays bounded (its RSS is
  sampled), and the latency percentiles are reported;
* fuzzing: hypothesis-generated request bodies (valid requests with fields replaced
  by arbitrary JSON, arbitrary JSON, arbitrary bytes) get 2xx or 4xx, never 5xx;
* credentials (Basic auth secrets, URL user info, presigned-URL signatures) never
  appear in the server's log nor in its answers;
* the upstream allow-list is not bypassed by redirects, other spellings of loopback
  IP literals, user info in URLs or DNS names that point at loopback: a canary
  server that is not on the list must never receive a request.

Slow variants (20 000 requests, many more fuzz examples)::

    ci/test.sh tests/reliability -m slow -k active
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.active import OPENER, free_port, start_active_server, stop_process
from test_faults import record_figures

BUCKET = "active-reliability"
SECRET = "S3cr3t-Sentinel-0000"  # must never show up in a log or an answer
CI_REQUESTS, SLOW_REQUESTS = 2000, 20000
CI_FUZZ, SLOW_FUZZ = 150, 3000
COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck), "database": None}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- a canary (must never be reached) and an allowed upstream that redirects to it ------
@dataclass
class Stubs:
    canary_port: int
    redirector_port: int
    canary_hits: list[str] = field(default_factory=list)

    @property
    def redirector(self) -> str:
        return f"http://127.0.0.1:{self.redirector_port}"


def _stub_apps(stubs: Stubs) -> tuple[web.Application, web.Application]:
    async def canary(request: web.Request) -> web.Response:
        stubs.canary_hits.append(f"{request.method} {request.host} {request.path_qs}")
        return web.Response(body=bytes(64))

    async def redirect(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        target = request.query.get("to", f"http://127.0.0.1:{stubs.canary_port}/secret")
        return web.Response(status=code, headers={"Location": target})

    canary_app = web.Application()
    canary_app.router.add_route("*", "/{tail:.*}", canary)
    redirector_app = web.Application()
    redirector_app.router.add_get("/r/{code}/{name}", redirect)
    return canary_app, redirector_app


@pytest.fixture(scope="module")
def stubs() -> Iterator[Stubs]:
    s = Stubs(free_port(), free_port())
    loop = asyncio.new_event_loop()
    canary_app, redirector_app = _stub_apps(s)
    runners = [web.AppRunner(canary_app, access_log=None),
               web.AppRunner(redirector_app, access_log=None)]
    started = threading.Event()

    async def setup() -> None:
        await runners[0].setup()
        await runners[1].setup()
        hosts = ["127.0.0.1"] + (["::1"] if socket.has_ipv6 else [])
        for host in hosts:  # the canary answers on IPv4 and IPv6 loopback
            try:
                await web.TCPSite(runners[0], host, s.canary_port).start()
            except OSError:
                pass
        await web.TCPSite(runners[1], "127.0.0.1", s.redirector_port).start()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(setup())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="reliability-stubs", daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield s
    finally:
        for r in runners:
            asyncio.run_coroutine_threadsafe(r.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# -- the server under test --------------------------------------------------------------
@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path
    endpoint: str
    access_key: str
    secret_key: str
    object_url: str
    n: int

    def rss(self) -> int:
        """Resident set size of the server process, bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def body(self, **fields: Any) -> dict:
        return {"interface_type": "s3", "url": self.object_url, "dtype": "int32",
                "shape": [self.n], **fields}

    def post(self, op: str, body: Any, auth: tuple[str, str] | None = None,
             raw: bytes | None = None, timeout: float = 30) -> tuple[int, bytes]:
        data = raw if raw is not None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/v2/{op}/", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        if auth is not None:
            req.add_header("Authorization", basic(*auth))
        try:
            with OPENER.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    @property
    def auth(self) -> tuple[str, str]:
        return self.access_key, self.secret_key


@pytest.fixture(scope="module")
def server(seaweedfs: Any, stubs: Stubs, tmp_path_factory: Any) -> Iterator[Server]:
    seaweedfs.create_bucket(BUCKET)
    n = 16384  # 64 KiB of int32 per request
    seaweedfs.s3_client().put_object(Bucket=BUCKET, Key="load/data.bin",
                                     Body=np.arange(n, dtype="<i4").tobytes())
    log_path = tmp_path_factory.mktemp("active-reliability") / "server.log"
    proc, url = start_active_server(log_path, [
        "--log-level", "DEBUG", "--max-in-flight", "32", "--allow-upstream",
        seaweedfs.endpoint, "--allow-upstream", stubs.redirector])
    try:
        yield Server(url, proc, log_path, seaweedfs.endpoint, seaweedfs.access_key,
                     seaweedfs.secret_key, f"{seaweedfs.endpoint}/{BUCKET}/load/data.bin", n)
    finally:
        stop_process(proc, timeout=10)


# -- load -------------------------------------------------------------------------------
def parse_hey(out: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["requests_per_second"] = float(m.group(1)) if m else None
    for pct in ("10", "50", "90", "95", "99"):
        m = re.search(rf"\b{pct}%+ in ([\d.]+) secs", out)
        figures[f"p{pct}_ms"] = round(float(m.group(1)) * 1000, 2) if m else None
    figures["status"] = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) resp",
                                                                 out)}
    errors = out.split("Error distribution:")[1] if "Error distribution:" in out else ""
    figures["errors"] = sum(int(n) for n in re.findall(r"\[(\d+)\]", errors))
    return figures


def load_test(server: Server, tmp_path: Path, requests: int, concurrency: int = 8) -> dict:
    # (Debian's hey 0.1.4 ignores -a: the Authorization header is given explicitly)
    hey = shutil.which("hey")
    if hey is None:
        pytest.skip("the load tool hey is not installed (apt-get install hey)")
    body = tmp_path / "body.json"
    body.write_text(json.dumps(server.body(axis=None)))
    cmd = [hey, "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-T",
           "application/json", "-D", str(body), "-H", f"Authorization: {basic(*server.auth)}",
           "-t", "30", f"{server.url}/v2/sum/"]
    # warm up (connections, caches, threads), then measure
    subprocess.run(cmd[:2] + [str(min(200, requests))] + cmd[3:], capture_output=True,
                   timeout=120, check=True)
    baseline = server.rss()
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(server.rss())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    assert proc.returncode == 0, proc.stderr
    figures = parse_hey(proc.stdout)
    figures.update({"requests": requests, "concurrency": concurrency,
                    "seconds": round(elapsed, 2), "rss_baseline_mib": baseline >> 20,
                    "rss_peak_mib": max(samples, default=baseline) >> 20,
                    "rss_after_mib": server.rss() >> 20})
    return figures


def check_load(figures: dict, requests: int) -> None:
    assert figures["status"] == {200: requests}, figures
    assert figures["errors"] == 0, figures
    # bounded memory: the measured run adds no more than 150 MiB over the warm server
    assert figures["rss_peak_mib"] - figures["rss_baseline_mib"] < 150, figures
    assert figures["p99_ms"] is not None and figures["requests_per_second"] > 0


def test_load_fixed_request_count(server: Server, tmp_path: Path) -> None:
    figures = load_test(server, tmp_path, CI_REQUESTS)
    record_figures("active_load", figures)
    check_load(figures, CI_REQUESTS)
    assert SECRET not in server.log()


@pytest.mark.slow
def test_load_many_requests_slow(server: Server, tmp_path: Path) -> None:
    first = load_test(server, tmp_path, SLOW_REQUESTS, concurrency=16)
    second = load_test(server, tmp_path, SLOW_REQUESTS, concurrency=16)
    record_figures("active_load_slow", {"first": first, "second": second})
    check_load(first, SLOW_REQUESTS)
    check_load(second, SLOW_REQUESTS)
    # no leak: a second run of 20 000 requests does not grow the server further
    assert second["rss_after_mib"] - first["rss_after_mib"] < 50, (first, second)


# -- fuzzing ----------------------------------------------------------------------------
FIELDS = ["interface_type", "url", "dtype", "byte_order", "offset", "size", "shape", "axis",
          "order", "selection", "compression", "filters", "missing",
          "option_disable_chunk_cache", "option_shape_as_bytes", "option_count_as_bytes",
          "skip_nan", "sum_int64"]
json_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
             | st.text(max_size=16)
             | st.sampled_from(["int32", "float64", "uint64", "big", "little", "C", "F",
                                "gzip", "zlib", "blosc", "shuffle", "s3", "http", "",
                                "missing_value", "valid_range", "\x00", "é" * 3]))
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=5)
                        | st.dictionaries(st.sampled_from(FIELDS + ["id", "element_size",
                                                                     "x"]) | st.text(max_size=5),
                                          c, max_size=5), max_leaves=12)
OPS = st.sampled_from(["sum", "min", "max", "count", "select", "mean", "", "../healthz"])


@st.composite
def mutated_request(draw: Any, server: Server) -> dict:
    body = server.body()
    optional = {"offset": 0, "size": server.n * 4, "axis": 0, "order": "C",
                "selection": [[0, server.n, 1]], "byte_order": "little",
                "missing": {"missing_value": 3}, "filters": [{"id": "shuffle",
                                                              "element_size": 4}],
                "compression": None}
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)):
        body[name] = optional[name]
    for name in draw(st.lists(st.sampled_from(FIELDS + ["bogus"]), max_size=3, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(json_any)
        else:
            body.pop(name, None)
    return body


def check_answer(status: int, payload: bytes, what: Any) -> None:
    assert 200 <= status < 500, f"{status} for {what!r}: {payload[:300]!r}"
    assert SECRET.encode() not in payload
    if status >= 400:
        err = json.loads(payload)["error"]  # a JSON error body naming the problem
        assert isinstance(err["message"], str) and err["message"]


FUZZ_COUNTS: dict[str, int] = {}


def _count(kind: str, status: int) -> None:
    key = f"{kind}:{status // 100}xx"
    FUZZ_COUNTS[key] = FUZZ_COUNTS.get(key, 0) + 1


@settings(max_examples=CI_FUZZ, derandomize=True, **COMMON)
@given(data=st.data())
def test_fuzz_requests_never_5xx(server: Server, data: Any) -> None:
    body = data.draw(mutated_request(server))
    op = data.draw(OPS)
    status, payload = server.post(op, body, auth=server.auth)
    _count("request", status)
    check_answer(status, payload, (op, body))


@settings(max_examples=CI_FUZZ, derandomize=True, **COMMON)
@given(raw=st.binary(max_size=300) | json_any.map(lambda v: json.dumps(v).encode())
       | st.sampled_from([b"[" * 100000, b'{"a":' * 50000, b"\xff\xfe", b"{}" * 1000,
                          b'{"url": "' + b"A" * 10000 + b'"}']))
def test_fuzz_raw_bodies_never_5xx(server: Server, raw: bytes) -> None:
    status, payload = server.post("sum", None, raw=raw)
    _count("raw body", status)
    check_answer(status, payload, raw[:100])


@pytest.mark.slow
@settings(max_examples=SLOW_FUZZ, **COMMON)
@given(data=st.data())
def test_fuzz_requests_never_5xx_slow(server: Server, data: Any) -> None:
    body = data.draw(mutated_request(server))
    status, payload = server.post(data.draw(OPS), body, auth=server.auth)
    _count("request (slow)", status)
    check_answer(status, payload, body)


def test_fuzz_figures() -> None:
    """Runs after the fuzz tests of this module: keeps their counts for the report."""
    record_figures("active_fuzz", FUZZ_COUNTS)


# -- credentials ------------------------------------------------------------------------
def test_credentials_never_logged_nor_echoed(server: Server, stubs: Stubs) -> None:
    checks = [
        # Basic auth with the secret, to an allowed upstream (wrong key: 401 upstream)
        ("sum", server.body(), ("someone", SECRET), None),
        # the secret as URL user info, and in a presigned-looking query string
        ("sum", server.body(url=server.object_url.replace("http://",
                                                          f"http://key:{SECRET}@")), None, None),
        ("sum", server.body(url=server.object_url + f"?X-Amz-Signature={SECRET}"), None, None),
        ("sum", server.body(interface_type="http",
                            url=f"{stubs.redirector}/r/302/x?to=http://u:{SECRET}@h/"),
         ("u", SECRET), None),
        # malformed auth headers carrying it
        ("sum", server.body(), None, None),
    ]
    for op, body, auth, raw in checks:
        status, payload = server.post(op, body, auth=auth, raw=raw)
        assert 400 <= status < 600 and SECRET.encode() not in payload, (status, payload)
    req = urllib.request.Request(f"{server.url}/v2/sum/", data=json.dumps(server.body()).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {SECRET}"})
    try:
        OPENER.open(req, timeout=10)
    except urllib.error.HTTPError as err:
        assert SECRET.encode() not in err.read()
    time.sleep(0.2)  # let the log lines land
    log = server.log()
    assert SECRET not in log
    assert base64.b64encode(f"someone:{SECRET}".encode()).decode() not in log
    assert server.secret_key not in log  # the real secret, used by the load test too


# -- the allow-list ---------------------------------------------------------------------
def bypass_urls(canary: int, allowed_port: int) -> list[str]:
    """Ways of naming the canary (127.0.0.1:canary, not allowed) that a naive check might
    take for an allowed origin, or that reach loopback by another name."""
    hosts = ["127.0.0.1", "127.1", "127.0.1", "0x7f000001", "0x7f.0.0.1", "2130706433",
             "0177.0.0.1", "017700000001", "127.000.000.001", "127.0.0.1.", "[::1]",
             "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:0:0:1]", "localhost",
             "LOCALHOST", "localhost.", "localhost.localdomain", "ip6-localhost",
             "127.0.0.1.nip.io", "0.0.0.0", "0", "%31%32%37.0.0.1", "127%2e0%2e0%2e1"]
    urls = [f"http://{h}:{canary}/{BUCKET}/secret" for h in hosts]
    allowed = f"127.0.0.1:{allowed_port}"
    urls += [
        # user info tricks: the part before '@' looks like the allowed origin
        f"http://{allowed}@127.0.0.1:{canary}/{BUCKET}/secret",
        f"http://{allowed}:x@127.0.0.1:{canary}/{BUCKET}/secret",
        f"http://user:pass@127.0.0.1:{canary}/{BUCKET}/secret",
        f"http://{allowed}%40127.0.0.1:{canary}/{BUCKET}/secret",
        f"http://127.0.0.1:{canary}\\@{allowed}/{BUCKET}/secret",
        f"http://127.0.0.1:{canary}#@{allowed}/{BUCKET}/secret",
        f"http://127.0.0.1:{canary}?@{allowed}/{BUCKET}/secret",
        # the allowed origin in a path or query, or ports that parse differently
        f"http://127.0.0.1:{canary}/{allowed}/{BUCKET}/secret",
        f"http://127.0.0.1:{canary}/?u=http://{allowed}/",
        f"http://127.0.0.1:{allowed_port}:{canary}/{BUCKET}/secret",
        f"http://127.0.0.1:{''.join(chr(0xFF10 + int(d)) for d in str(canary))}/b/secret",
        f"http://127.0.0.1: {canary}/{BUCKET}/secret",
        f"http://127.0.0.1:+{canary}/{BUCKET}/secret",
        f"http://127.0.0.1\t:{canary}/{BUCKET}/secret",
        f"http://[::1%25lo]:{canary}/{BUCKET}/secret",
        f"HTTP://127.0.0.1:{canary}/{BUCKET}/secret",
        f"https://127.0.0.1:{canary}/{BUCKET}/secret",
        f"//127.0.0.1:{canary}/{BUCKET}/secret",
        f"http:127.0.0.1:{canary}/{BUCKET}/secret",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{canary}/_GET",
    ]
    return urls


def test_allow_list_cannot_be_bypassed(server: Server, stubs: Stubs) -> None:
    allowed_port = int(server.endpoint.rsplit(":", 1)[1])
    urls = bypass_urls(stubs.canary_port, allowed_port)
    outcomes: dict[str, int] = {}
    for url in urls:
        for interface in ("s3", "http"):
            for auth in (None, server.auth):
                status, payload = server.post("sum", server.body(interface_type=interface,
                                                                 url=url), auth=auth)
                assert status in (400, 403), (url, interface, status, payload)
                outcomes[str(status)] = outcomes.get(str(status), 0) + 1
    assert stubs.canary_hits == [], stubs.canary_hits
    record_figures("active_allow_list", {"urls": len(urls), "requests": 4 * len(urls),
                                         "answers": outcomes, "canary_hits": 0})


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(server: Server, stubs: Stubs, code: int) -> None:
    """An allowed upstream that redirects to the canary (or to the allowed S3 with the
    caller's credentials) gets Reductionist's status for a failed fetch (400 over http,
    500 over s3), and the redirect is not followed."""
    before = len(stubs.canary_hits)
    for target in (f"http://127.0.0.1:{stubs.canary_port}/secret", server.object_url,
                   f"http://[::1]:{stubs.canary_port}/secret"):
        url = f"{stubs.redirector}/r/{code}/x?to={target}"
        for interface in ("http", "s3"):
            status, payload = server.post("sum", server.body(interface_type=interface,
                                                             url=url), auth=server.auth)
            assert status in (400, 500), (code, target, interface, status, payload)
    assert len(stubs.canary_hits) == before


def test_good_requests_still_work(server: Server) -> None:
    """The checks above refuse only what they should: the real object sums right."""
    status, payload = server.post("sum", server.body(), auth=server.auth)
    assert status == 200, payload
    import cbor2

    reply = cbor2.loads(payload)
    total = np.frombuffer(reply["bytes"], dtype=reply["dtype"])[0]
    assert int(total) == int(np.arange(server.n, dtype="<i4").sum())
