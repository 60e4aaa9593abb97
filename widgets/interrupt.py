"""Kernel > Interrupt stops a view's background work: a registry of running jobs and a SIGINT hook.

An interrupt from JupyterLab is a SIGINT to the kernel process. ipykernel ignores SIGINT while
idle and, around each message it handles, swaps in `signal.default_int_handler` (its
`pre_handler_hook`) and puts the idle handler back afterwards (`post_handler_hook`). A run in a
background thread therefore never hears an interrupt. Here every SIGINT handler ipykernel
installs is wrapped in one that first asks each running job to stop, then does what ipykernel's
handler would have done: nothing while idle, KeyboardInterrupt in a busy cell. Outside a kernel
(plain Python, pytest) nothing is installed and SIGINT behaves as it always did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

_running: dict[int, Callable[[], None]] = {}  # id -> what stops that job
_lock = threading.Lock()


class _StopRunsThen:
    """A SIGINT handler: stop every running job, then defer to `previous` (ipykernel's)."""

    def __init__(self, previous) -> None:
        self.previous = previous

    def __call__(self, signum, frame) -> None:
        with _lock:
            stops = list(_running.values())
        for stop in stops:
            stop()
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:  # what SIGINT would have done: end the process
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        # SIG_IGN or None (set outside Python): nothing more, as before


def _wrap_current_handler() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; the next hook call wraps it there
    current = signal.getsignal(signal.SIGINT)
    if not isinstance(current, _StopRunsThen):
        signal.signal(signal.SIGINT, _StopRunsThen(current))


def _kernel():
    """The ipykernel running this code, or None (plain Python, pytest, a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    kernel = getattr(get_ipython(), "kernel", None)
    has_hooks = all(hasattr(kernel, name) for name in ("pre_handler_hook", "post_handler_hook"))
    return kernel if has_hooks else None


def install_interrupt_hook() -> bool:
    """In a Jupyter kernel, make SIGINT stop running jobs too; True if installed (idempotent).

    Call it from the main thread (a view's constructor): the handler in force now is wrapped at
    once, and every one ipykernel installs later is wrapped by its hooks.
    """
    kernel = _kernel()
    if kernel is None:
        return False
    if not getattr(kernel, "_course_stops_runs", False):
        pre, post = kernel.pre_handler_hook, kernel.post_handler_hook

        def pre_handler_hook() -> None:
            pre()
            _wrap_current_handler()

        def post_handler_hook() -> None:
            post()
            _wrap_current_handler()

        # Looked up on each message, so the message being handled now already ends with ours.
        kernel.pre_handler_hook, kernel.post_handler_hook = pre_handler_hook, post_handler_hook
        kernel._course_stops_runs = True
    _wrap_current_handler()
    return True


@contextlib.contextmanager
def stopped_by_interrupt(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, an interrupt of the kernel calls `stop` (which should end the job soon)."""
    key = object()
    with _lock:
        _running[id(key)] = stop
    try:
        yield
    finally:
        with _lock:
            del _running[id(key)]


def running_jobs() -> int:
    """How many jobs an interrupt would stop now."""
    with _lock:
        return len(_running)
