"""Crash consistency: writers SIGKILLed after their Nth PUT leave no visible domain or
the previous complete version, never a half-written one.

The writers are forked from one warm helper process (crash_writer.py); each is killed
by a patched ``ObjectStore.put`` once N PUTs have completed, N spread over the whole
write (from before the first PUT to just before the last one, which publishes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from test_faults import record_figures

import h5dask

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import crash_writer  # noqa: E402

# kill points per scenario in CI (None: every PUT of the write); the slow variant kills
# at every point of every scenario
CI_POINTS: dict[str, int | None] = {"overwrite": 20, "new": 3, "append": 3, "file_append": 2}


def have_load() -> bool:
    try:
        from h5dask.ingest.load import load_file  # noqa: F401
    except ImportError:
        return False
    return True


def run_writers(seaweedfs: Any, tmp_path: Path, scenarios: dict[str, int | None],
                base: str) -> list[dict]:
    plan = {"base": base, "options": seaweedfs.storage_options(), "workdir": str(tmp_path),
            "scenarios": scenarios}
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT),
                                                    env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(HERE / "crash_writer.py"), str(plan_path)],
                          capture_output=True, text=True, timeout=600, env=env,
                          stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def reference(url: str, options: dict) -> tuple[xr.Dataset, dict]:
    """What a reader sees of a domain: the xarray view and, via h5dask.File, every
    object's values and attributes (REFERENCE_LIST apart, see check_references)."""
    view = xr.open_dataset(url, engine="h5cloud", storage_options=options).load()
    objects: dict[str, Any] = {}
    with h5dask.File(url, storage_options=options) as f:
        objects["/"] = {k: _plain(v) for k, v in f.attrs.items()}

        def visit(name: str, obj: Any) -> None:
            attrs = {k: _plain(obj.attrs[k]) for k in obj.attrs if k not in (
                "REFERENCE_LIST", "DIMENSION_LIST")}
            values = obj[...].tolist() if isinstance(obj, h5dask.Dataset) else None
            objects[name] = {"attrs": attrs, "values": values}

        f.visititems(visit)
        check_references(f)
    return view, objects


def _plain(value: Any) -> Any:
    return np.asarray(value).tolist()


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (fill values)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True,
                                                                     default=repr)


def check_references(f: Any) -> None:
    """Every object reference in the dimension attributes points at an existing object."""
    session = f._session

    def visit(_name: str, obj: Any) -> None:
        for attr in ("REFERENCE_LIST", "DIMENSION_LIST"):
            if attr not in obj.attrs:
                continue
            refs = np.asarray(obj.attrs[attr]).reshape(-1)
            for ref in refs:
                targets = [ref["dataset"]] if attr == "REFERENCE_LIST" else list(ref)
                for target in targets:
                    target = target.decode() if isinstance(target, bytes) else str(target)
                    session.load(target.removeprefix("datasets/"))  # raises if missing

    f.visititems(visit)


def classify(keys: list[str]) -> str:
    if not keys:
        return "before any PUT"
    last = keys[-1]
    if last.endswith(".domain.json"):
        return "after .domain.json"
    if last.endswith(".group.json"):
        return "after a group"
    if last.endswith(".dataset.json"):
        return "after a dataset's metadata"
    return "after a chunk"


def verify(results: list[dict], options: dict, expected: dict[str, Any]) -> list[dict]:
    """Check every killed writer's domain; returns one line per kill point."""
    report = []
    for r in results:
        if r.get("count"):
            assert r["outcome"] == "completed", r
            continue
        assert r["outcome"] == "killed", r
        scenario, url = r["scenario"], r["url"]
        if scenario in ("new", "load_new"):
            with pytest.raises(h5dask.DomainNotFoundError):
                h5dask.File(url, storage_options=options)
            with pytest.raises(FileNotFoundError):
                xr.open_dataset(url, engine="h5cloud", storage_options=options)
            state = "no domain"
        else:
            view, objects = reference(url, options)
            ref_view, ref_objects = expected[scenario]
            xr.testing.assert_identical(view, ref_view)
            assert _same(objects, ref_objects), (scenario, r["kill_after"])
            state = "previous version"
        report.append({"scenario": scenario, "kill_after": r["kill_after"],
                       "of": r["total_puts"], "where": classify(r["last_keys"]),
                       "outcome": state})
    return report


@pytest.fixture(scope="module")
def expected(seaweedfs: Any) -> dict[str, Any]:
    """The previous (complete) versions, written without dying, as readers see them."""
    options = seaweedfs.storage_options()
    url = f"s3://h5dask-test/reliability/crash-ref-{uuid.uuid4().hex[:8]}/v1.h5"
    crash_writer.write_version1(url, options)
    ref = reference(url, options)
    return {"overwrite": ref, "append": ref, "file_append": ref}


def kill_and_check(seaweedfs: Any, tmp_path: Path, expected: dict, points: dict,
                   name: str) -> list[dict]:
    base = f"s3://h5dask-test/reliability/crash-{uuid.uuid4().hex[:8]}"
    results = run_writers(seaweedfs, tmp_path, points, base)
    report = verify(results, seaweedfs.storage_options(), expected)
    totals = {r["scenario"]: r["puts_done"] for r in results if r.get("count")}
    record_figures(name, {"puts_per_write": totals, "kill_points": report})
    return report


def test_kill_during_to_h5cloud(seaweedfs: Any, tmp_path: Path, expected: dict) -> None:
    report = kill_and_check(seaweedfs, tmp_path, expected, CI_POINTS, "crash")
    by_scenario: dict[str, int] = {}
    for line in report:
        by_scenario[line["scenario"]] = by_scenario.get(line["scenario"], 0) + 1
    assert by_scenario["overwrite"] >= 20  # 20 distinct points of one to_h5cloud write
    assert len({line["kill_after"] for line in report if line["scenario"] == "overwrite"}) >= 20
    # the last point of each write: every object written but the commit
    assert any(line["where"] in ("after a group", "after a dataset's metadata")
               for line in report)


@pytest.mark.slow
def test_kill_at_every_put_slow(seaweedfs: Any, tmp_path: Path, expected: dict) -> None:
    points: dict[str, int | None] = dict.fromkeys(CI_POINTS, None)
    report = kill_and_check(seaweedfs, tmp_path, expected, points, "crash_slow")
    assert len(report) > 60


def test_domain_is_writable_again_after_a_crash(seaweedfs: Any, tmp_path: Path) -> None:
    """What a killed writer leaves behind (orphan objects) does not hinder a new write."""
    base = f"s3://h5dask-test/reliability/crash-again-{uuid.uuid4().hex[:8]}"
    results = run_writers(seaweedfs, tmp_path, {"new": 2, "overwrite": 2}, base)
    options = seaweedfs.storage_options()
    for r in results:
        if r.get("count"):
            continue
        h5dask.to_h5cloud(crash_writer.version2(), r["url"], storage_options=options,
                          encoding=crash_writer.ENCODING_V2)
        got = xr.open_dataset(r["url"], engine="h5cloud", storage_options=options).load()
        xr.testing.assert_equal(got, crash_writer.version2().compute())


def kill_during_load(seaweedfs: Any, tmp_path: Path, points: dict) -> list[dict]:
    options = seaweedfs.storage_options()
    ref_url = f"s3://h5dask-test/reliability/crash-load-ref-{uuid.uuid4().hex[:8]}.h5"
    crash_writer.load_source(str(tmp_path / "src-v1.h5"), 1)
    crash_writer.run_load({"url": ref_url, "options": options, "workdir": str(tmp_path)}, 1)
    expected = {"load": reference(ref_url, options)}
    return kill_and_check(seaweedfs, tmp_path, expected, points,
                          "crash_load" if points["load"] else "crash_load_slow")


@pytest.mark.skipif(not have_load(), reason="h5dask.ingest.load (h5dask load) not there yet")
def test_kill_during_load(seaweedfs: Any, tmp_path: Path) -> None:
    """``h5dask load`` killed at 20 points over a loaded version 1 (version 1 stays) and
    at 2 into an empty place (no domain appears)."""
    report = kill_during_load(seaweedfs, tmp_path, {"load": 20, "load_new": 2})
    assert sum(line["scenario"] == "load" for line in report) >= 20


@pytest.mark.slow
@pytest.mark.skipif(not have_load(), reason="h5dask.ingest.load (h5dask load) not there yet")
def test_kill_during_load_at_every_put_slow(seaweedfs: Any, tmp_path: Path) -> None:
    report = kill_during_load(seaweedfs, tmp_path, {"load": None, "load_new": None})
    assert sum(line["scenario"] == "load" for line in report) >= 20


def test_flush_writes_new_objects_before_changed_ones(tmp_path: Path) -> None:
    """mode="a": every new object is stored before any changed existing object (which
    may refer to it) starts to be written, and the root group comes last: a crash at
    any point leaves no reference to a missing object."""
    from h5dask.storage.base import ObjectStore

    url = (tmp_path / "order.h5").as_uri()
    crash_writer.write_version1(url, {})
    events: list[tuple[str, str]] = []
    original = ObjectStore.put

    async def put(self: Any, key: str, data: Any, *, kind: str = "chunk") -> None:
        events.append(("start", key))
        await original(self, key, data, kind=kind)
        events.append(("end", key))

    ObjectStore.put = put  # type: ignore[method-assign]
    try:
        with h5dask.File(url, storage_options={}) as f:
            existing = {f[name]._session.raw(f[name].id)["id"] for name in ("y", "x")}
            root = f.id
        h5dask.to_h5cloud(crash_writer.extra(), url, mode="a")
    finally:
        ObjectStore.put = original  # type: ignore[method-assign]
    from h5dask.format import ids

    metadata = [(e, k) for e, k in events if k.endswith(".json")]
    changed_keys = {ids.object_key(i) for i in existing}
    root_key = ids.object_key(root)
    first_changed = min(n for n, (e, k) in enumerate(metadata) if k in changed_keys)
    summary = [n for n, (e, k) in enumerate(metadata) if k.endswith(".h5dask-consolidated.json")]
    last_new = max(n for n, (e, k) in enumerate(metadata)
                   if e == "end" and k not in changed_keys and k != root_key
                   and n not in summary)
    assert last_new < first_changed, metadata
    assert metadata[-1] == ("end", root_key) and metadata[-2] == ("start", root_key)
    # the consolidated metadata is written just before the root group publishes the change
    assert summary and summary[-1] == len(metadata) - 3, metadata
