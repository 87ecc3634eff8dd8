"""The I/O loop's orderly shutdown at exit (``h5dask/storage/sync.py``, ``_shut_down``).

Its ``atexit`` handler is registered when the loop starts, so handlers of modules imported
earlier run after it (last registered, first run). What lives on the loop is closed by
``close_at_exit`` before it stops, and a handler that runs later and still needs the
loop gets a fresh one instead of waiting on a stopped loop.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_program(source: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)],
                          capture_output=True, text=True, timeout=60)


def test_the_active_clients_http_session_is_closed_before_the_loop_stops():
    done = run_program("""
        from h5dask.active import client
        import importlib
        sync = importlib.import_module("h5dask.storage.sync")  # the module, not the function

        async def open_session():
            return client._session()

        session = sync.sync(open_session())
        sync._shut_down()
        print("closed" if session.closed else "open")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["closed"]


def test_a_program_with_an_active_session_exits_without_aiohttp_complaints():
    done = run_program("""
        from h5dask.active import client
        import importlib
        sync = importlib.import_module("h5dask.storage.sync")  # the module, not the function

        async def open_session():
            return client._session()

        sync.sync(open_session())
        print("done")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done"]
    assert "Unclosed" not in done.stderr


def test_an_exit_handler_that_runs_after_the_shutdown_gets_a_fresh_loop():
    done = run_program("""
        import atexit
        import importlib
        sync = importlib.import_module("h5dask.storage.sync")  # the module, not the function

        async def answer():
            return 42

        # registered before the loop starts: runs after the loop's own shutdown handler
        atexit.register(lambda: print("late", sync.sync(answer(), timeout=10)))
        print("early", sync.sync(answer()))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["early", "42", "late", "42"]


@pytest.mark.parametrize("failing", [True, False])
def test_a_closer_that_fails_does_not_stop_the_others(failing: bool):
    done = run_program(f"""
        import importlib
        sync = importlib.import_module("h5dask.storage.sync")  # the module, not the function

        async def bad():
            if {failing}:
                raise RuntimeError("boom")

        async def good():
            print("good closer ran")

        sync.close_at_exit(bad)
        sync.close_at_exit(good)
        sync.close_at_exit(good)  # registered once
        sync.sync(good())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["good closer ran", "good closer ran"]


def test_all_ended_raises_the_first_failure_only_after_every_awaitable_ended():
    """A failure ends at once while its siblings are slower: all_ended waits for them,
    raises the first failure (in order, not in time) and notes how many failed."""
    import asyncio

    from h5dask.storage.sync import all_ended, sync

    ended: list[str] = []

    async def fails(name: str, after: float) -> None:
        await asyncio.sleep(after)
        ended.append(name)
        raise ValueError(name)

    async def slow() -> None:
        await asyncio.sleep(0.05)
        ended.append("slow")

    with pytest.raises(ValueError, match="late") as caught:
        sync(all_ended([fails("late", 0.01), fails("early", 0), slow()], "PUTs"))
    assert sorted(ended) == ["early", "late", "slow"]  # nothing still running
    assert caught.value.__notes__ == ["2 of 3 PUTs of this call failed; this is the first"]
