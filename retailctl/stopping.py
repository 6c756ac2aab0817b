"""Stop signals that are never lost.

CPython runs a Python signal handler between two bytecodes of whatever the main thread runs
then: a weakref callback or a `__del__` included, where an exception is printed ("Exception
ignored in ...") and dropped. A SIGINT or SIGTERM that arrived there was lost and the command
went on to its end, exit 0 (seen: Ctrl-C during an import, in a weakref callback of the import
lock). The handlers installed here also record the signal, and `raise_if_stopped()`, called
where work goes on from (each source request, each file loaded, a command's end), raises it
again; Python's "Exception ignored" report of it is left out, as it is not lost. In a process
that never called `install()` (retailctl used as a library) it does nothing.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType

from retailctl.errors import Terminated

_received: type[BaseException] | None = None


def _handler(exception: type[BaseException]) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        global _received
        _received = exception
        raise exception()

    return handle


def install() -> None:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt, as before, and both are kept."""
    signal.signal(signal.SIGTERM, _handler(Terminated))
    signal.signal(signal.SIGINT, _handler(KeyboardInterrupt))
    sys.unraisablehook = _quiet_for_kept_stops(sys.unraisablehook)


def _quiet_for_kept_stops(
    report: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], None]:
    """Python's report of an exception it dropped, except a stop signal's that is kept."""

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if _received is not None and unraisable.exc_type is _received:
            return  # raised again by raise_if_stopped: no traceback for the user
        report(unraisable)

    return hook


def raise_if_stopped() -> None:
    """Raise the stop signal's exception if one arrived (again: once stopped, always stopped)."""
    if _received is not None:
        raise _received()


def handled() -> None:
    """The stop signal was the expected end of the work (a server told to stop): forget it."""
    global _received
    _received = None
