"""Stop signals that are never lost.

CPython runs a Python signal handler between two bytecodes of whatever the main thread runs
then: a weakref callback or a `__del__` included, where an exception is printed ("Exception
ignored in ...") and dropped. A SIGINT or SIGTERM that arrived there was lost and the command
went on to its end, exit 0 (seen: Ctrl-C during an import, in a weakref callback of the import
lock). The handlers installed here also record the signal, and `raise_if_stopped()`, called
where work goes on from (each source request, each file loaded, a command's end), raises it
again. In a process that never called `install()` (retailctl used as a library) it does
nothing.
"""

from __future__ import annotations

import signal
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


def raise_if_stopped() -> None:
    """Raise the stop signal's exception if one arrived (again: once stopped, always stopped)."""
    if _received is not None:
        raise _received()


def handled() -> None:
    """The stop signal was the expected end of the work (a server told to stop): forget it."""
    global _received
    _received = None
