"""RequestSlots (h5dask/storage/base.py): the one request limit of a store, shared by
task threads and the I/O loop. Its sharing under load is tested against real servers in
tests/reliability/test_request_bounds.py; here, the ways a waiter can leave."""

from __future__ import annotations

import os
import sys
import time

import pytest

from h5dask.storage import base
from h5dask.storage.base import RequestSlots


@pytest.mark.parametrize("handed_first", [False, True], ids=["while-queued", "just-handed"])
def test_an_interrupted_blocking_wait_neither_keeps_nor_loses_a_slot(monkeypatch,
                                                                       handed_first) -> None:
    """Ctrl-C while a task thread waits for a slot (in a notebook, say): the slot count is
    whole afterwards, whether or not the slot had just been handed over."""
    slots = RequestSlots(1)
    slots.acquire_sync()  # the only slot is taken

    class InterruptedEvent(base.threading.Event):
        def wait(self, timeout=None):
            if handed_first:
                slots.release()  # the holder gives it back: handed to this waiter
            raise KeyboardInterrupt

    monkeypatch.setattr(base.threading, "Event", InterruptedEvent)
    with pytest.raises(KeyboardInterrupt):
        slots.acquire_sync()
    monkeypatch.undo()
    if not handed_first:
        slots.release()  # the holder gives it back now
    assert (slots.free, len(slots._waiters)) == (1, 0)
    slots.acquire_sync()  # and it can be taken again, without blocking
    assert slots.free == 0


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork")
def test_a_forked_child_starts_with_every_slot_free() -> None:
    """The parent's requests in flight are not the child's: a child forked while the
    parent holds every slot can still make requests."""
    slots = RequestSlots(1)
    slots.acquire_sync()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 once it has a slot
        try:
            slots.acquire_sync()
        finally:
            os._exit(0 if slots.free == 0 else 1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child waited for a slot its parent held")
