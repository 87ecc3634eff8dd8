"""Ending a command-line process with the exit code it chose, whatever threads still run.

Why not a normal interpreter exit: obstore runs its requests on a Rust (tokio) thread
pool that Python cannot join. When a request completes, one of those threads takes the
GIL to hand the result to the asyncio loop (``loop.call_soon_threadsafe``, whose
self-pipe ``send`` releases the GIL for a moment). The awaiting coroutine can resume,
and the program finish, before that thread has taken the GIL back. If the interpreter is
finalizing by then, CPython (before 3.14) ends the thread with ``pthread_exit``, whose
forced unwinding through Rust frames aborts the whole process: SIGABRT (134), sometimes
SIGBUS (135), after the command printed its correct output. A core dump shows exactly
that (main thread in ``Py_FinalizeEx``, a tokio blocking thread in ``take_gil`` ->
``PyThread_exit_thread`` -> ``abort`` under ``pyo3_async_runtimes::generic::set_result``).
For a library user's program, h5dask's ``atexit`` handler (``h5dask.storage.sync``)
stops its I/O loop and waits, boundedly, until no such thread holds a thread state. The
command line, which owns its process, does the orderly part of an exit itself
(non-daemon threads joined, ``atexit`` handlers run - that one included - standard
streams flushed) and then ends the process with :func:`os._exit`, skipping
finalization altogether.

Example::

    import click
    from h5dask.process_exit import CleanExitGroup

    @click.group(cls=CleanExitGroup)
    def main() -> None: ...
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from typing import Any, NoReturn

import click

__all__ = ["CleanExitGroup", "exit_code_of", "exit_process"]


def exit_code_of(code: Any) -> int:
    """The process exit status Python gives ``SystemExit(code)``.

    A message (not an int) is printed to stderr and gives 1, as the interpreter does.

    Example::

        >>> exit_code_of(None), exit_code_of(3)
        (0, 3)
    """
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass


def exit_process(code: int) -> NoReturn:
    """Do what a normal exit does that matters, then end the process with ``code``.

    Non-daemon threads are joined and ``atexit`` handlers run (as at interpreter exit),
    stdout and stderr are flushed, then :func:`os._exit` ends the process without
    interpreter finalization (see the module docstring for why). Never returns.
    """
    try:
        shutdown_threads = getattr(threading, "_shutdown", None)
        if shutdown_threads is not None:
            shutdown_threads()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - an exit handler failing must not change the code
        traceback.print_exc()
    _flush_standard_streams()
    os._exit(code)


class CleanExitGroup(click.Group):
    """A click group that, run as the program (``main()``), exits via :func:`exit_process`.

    ``main.main(...)`` (what click's ``CliRunner`` calls) behaves as usual, so tests that
    invoke the command line in-process keep their interpreter.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        try:
            self.main(*args, **kwargs)
            code = 0
        except SystemExit as exc:
            code = exit_code_of(exc.code)
        except KeyboardInterrupt:
            code = 130
        except Exception:  # what the interpreter would print for an uncaught error
            traceback.print_exc()
            code = 1
        exit_process(code)
