"""The private dask, xarray and distributed names pushdown and read-ahead rely on.

These tests pin them: on a dask or xarray release that moves one, they fail here, and
opening with active storage fails loudly instead of silently computing locally.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask import private_api
from h5dask.active import pushdown
from h5dask.active.config import ActiveStorageConfigError, resolve_active_config
from h5dask.active.pushdown import ActiveStorageWarning
from h5dask.private_api import PushdownUnsupportedError


def test_every_private_name_resolves():
    adapter = private_api.load()
    for role in private_api.PRIVATE_NAMES:
        assert getattr(adapter, role) is not None, role
    for cls in (*adapter.lazy_wrappers, adapter.Task, adapter.TaskRef, adapter.DataNode,
                adapter.Alias):
        assert inspect.isclass(cls), cls


def test_decoder_signatures_are_the_ones_pushdown_reads():
    """pushdown reads these keywords of xarray's decoding partials."""
    adapter = private_api.load()
    mask = inspect.signature(adapter.apply_mask).parameters
    assert {"encoded_fill_values", "dtype"} <= set(mask)
    scale = inspect.signature(adapter.scale_offset_decoding).parameters
    assert {"scale_factor", "add_offset", "dtype"} <= set(scale)


def test_xarray_wraps_h5dask_arrays_in_the_wrappers_pushdown_unwraps(tmp_path):
    """A CF-decoded (masked, scaled) variable unwraps to its h5dask array and decoding."""
    ds = xr.Dataset({"v": ("x", np.arange(10, dtype="i2"),
                           {"scale_factor": 0.5, "add_offset": 1.0, "_FillValue": -1})})
    url = f"file://{tmp_path}/adapter.h5"
    h5dask.to_h5cloud(ds, url)
    opened = xr.open_dataset(url, engine="h5cloud", chunks={},
                             active_storage_url="http://127.0.0.1:9")
    info = pushdown.find_source(_backend_array(opened["v"]))
    assert info is not None
    assert info.array.variable_name == "v"
    assert info.decoding.scale == 0.5 and info.decoding.offset == 1.0
    assert list(info.decoding.fill_values) == [-1]


def _backend_array(da: xr.DataArray):
    """The lazily indexed array dask's graph holds for ``da``."""
    dsk = da.data.dask
    adapter = private_api.load()
    for value in dict(dsk).values():
        obj = value.value if isinstance(value, adapter.DataNode) else value
        if isinstance(obj, adapter.lazy_wrappers):
            return obj
    raise AssertionError("no xarray wrapper in the graph")


@pytest.fixture
def broken_adapter(monkeypatch):
    """Pretend a dask release dropped one private name."""
    names = dict(private_api.PRIVATE_NAMES, Task=("dask._task_spec", "TaskRenamed"))
    monkeypatch.setattr(private_api, "PRIVATE_NAMES", names)
    private_api.load.cache_clear()
    yield
    private_api.load.cache_clear()


def test_a_moved_private_name_is_named_with_the_versions(broken_adapter):
    with pytest.raises(PushdownUnsupportedError, match=r"dask\._task_spec\.TaskRenamed") as err:
        private_api.load()
    assert "dask " in str(err.value) and "xarray " in str(err.value)
    assert isinstance(err.value, h5dask.H5DaskError)


def test_require_fails_loudly_when_pushdown_cannot_work(broken_adapter, tmp_path):
    url = f"file://{tmp_path}/broken.h5"
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.arange(4.0))}), url)
    with pytest.raises(PushdownUnsupportedError):
        xr.open_dataset(url, engine="h5cloud", chunks={}, active_storage="require",
                        active_storage_url="http://127.0.0.1:9")


def test_auto_warns_that_reductions_run_locally(broken_adapter, tmp_path):
    url = f"file://{tmp_path}/broken-auto.h5"
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.arange(4.0))}), url)
    pushdown._warned.clear()
    with pytest.warns(ActiveStorageWarning, match="TaskRenamed"):
        ds = xr.open_dataset(url, engine="h5cloud", chunks={},
                             active_storage_url="http://127.0.0.1:9")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(ds["v"].sum().compute(scheduler="sync")) == 6.0


def test_install_keeps_and_restores_the_previous_optimizer():
    import dask

    def mine(dsk, keys, **kwargs):
        calls.append(len(keys))
        from dask.array.optimization import optimize

        return optimize(dsk, keys, **kwargs)

    calls: list[int] = []
    pushdown.uninstall()
    with dask.config.set({"array_optimize": mine}):
        pushdown.install()
        assert dask.config.get("array_optimize") is pushdown.pushdown_optimize
        import dask.array as da

        assert int(da.ones(4, chunks=2).sum().compute(scheduler="sync")) == 4
        assert calls, "the user's optimizer still runs after the push-down rewrite"
        pushdown.uninstall()
        assert dask.config.get("array_optimize") is mine


@pytest.mark.parametrize("mode", ["yes", 1, "on", "REQUIRE"])
def test_a_bad_active_storage_value_is_named(mode):
    with pytest.raises(ActiveStorageConfigError, match=repr(mode)):
        resolve_active_config("http://127.0.0.1:9", mode)


def test_active_storage_url_must_be_http():
    with pytest.raises(ActiveStorageConfigError, match="ftp://x"):
        resolve_active_config("ftp://x", "auto")


def test_distributed_private_names_resolve():
    """Read-ahead on a worker reads its task's key and the worker's queue."""
    names = private_api.load_distributed()
    assert names is not None, "distributed is installed in the test environment"
    assert callable(names["get_worker"])
    from distributed.worker_state_machine import WorkerState

    assert "ready" in WorkerState.__annotations__ and "tasks" in WorkerState.__annotations__


def test_read_ahead_unwraps_what_xarray_builds(tmp_path):
    """The chunks a dask task of an h5cloud variable reads are found through xarray's
    wrappers (masking, scaling, bool) with the adapter's names."""
    from h5dask.xarray import lookahead

    ds = xr.Dataset({"v": ("x", np.arange(10, dtype="i2"), {"scale_factor": 0.5}),
                     "b": ("x", np.arange(10) % 2 == 0)})
    url = f"file://{tmp_path}/lookahead.h5"
    h5dask.to_h5cloud(ds, url, encoding={"v": {"chunks": (5,)}, "b": {"chunks": (5,)}})
    opened = xr.open_dataset(url, engine="h5cloud", chunks={})
    for name in ("v", "b"):
        found = lookahead.unwrap_h5cloud(_backend_array(opened[name]))
        assert found is not None, name
        assert found[0].variable_name == name


def test_the_local_schedulers_ready_stack_is_a_list_popped_from_the_end():
    """Read-ahead looks at, and may reorder, ``state["ready"]`` of dask's local scheduler
    (a list whose last task runs next) from a Callback; a dask that changes that shape
    makes the look-ahead stand aside, and this test says so."""
    import dask
    from dask.callbacks import Callback

    seen: list = []

    class Look(Callback):
        def _pretask(self, key, dsk, state):
            seen.append(type(state["ready"]))

    graph = {("x", i): (int, i) for i in range(4)}
    with Look():
        dask.get(graph, list(graph))
    assert seen and all(kind is list for kind in seen)
