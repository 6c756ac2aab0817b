"""A stop signal Python drops (raised where exceptions are ignored) is raised again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from retailctl import stopping
from retailctl.errors import Terminated


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """retailctl's handlers in this process for the test, pytest's own back after."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(stopping, "_received", None)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after
    stopping.install()
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# Delivers a signal while a weakref callback runs, where CPython drops the exception the
# handler raises (the import lock's callbacks are where a real Ctrl-C was lost), in a process
# of its own: Python's own report of a dropped exception goes to its real stderr.
DROPPED_IN_A_CALLBACK = """
import os, signal, sys, weakref
from retailctl import stopping
from retailctl.errors import Terminated

stopping.install()
signum = getattr(signal, sys.argv[1])
ran = []

class Owner:
    pass

def callback(_):
    os.kill(os.getpid(), signum)  # the handler runs at the next bytecode boundary: here
    for _ in range(1000):
        pass
    ran.append("went on")  # not reached: the handler's exception ended the callback

owner = Owner()
reference = weakref.ref(owner, callback)
del owner  # the callback runs now; Python drops its exception
print("callback ended by the signal" if not ran else "callback went on")
for _ in range(2):
    try:
        stopping.raise_if_stopped()
        print("nothing raised")
    except (KeyboardInterrupt, Terminated) as exc:
        print(type(exc).__name__, "raised again")
"""


@pytest.mark.parametrize(("name", "exception"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Terminated")])
def test_a_signal_python_drops_in_a_weakref_callback_is_raised_again_quietly(
    name: str, exception: str
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", DROPPED_IN_A_CALLBACK, name], capture_output=True, text=True, timeout=60
    )
    assert (ran.returncode, ran.stderr) == (0, "")  # no "Exception ignored ... Traceback"
    assert ran.stdout.splitlines() == [
        "callback ended by the signal",
        f"{exception} raised again",
        f"{exception} raised again",  # once stopped, stopped
    ]


def test_python_reports_other_dropped_exceptions_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the report of the stop signal that is kept is left out."""
    reported: list[type[BaseException]] = []
    quiet = stopping._quiet_for_kept_stops(lambda unraisable: reported.append(unraisable.exc_type))
    dropped = [SimpleNamespace(exc_type=exc_type) for exc_type in (ValueError, KeyboardInterrupt)]
    monkeypatch.setattr(stopping, "_received", None)
    for unraisable in dropped:
        quiet(unraisable)  # type: ignore[arg-type]
    assert reported == [ValueError, KeyboardInterrupt]  # no signal kept: both reported
    monkeypatch.setattr(stopping, "_received", KeyboardInterrupt)
    for unraisable in dropped:
        quiet(unraisable)  # type: ignore[arg-type]
    assert reported == [ValueError, KeyboardInterrupt, ValueError]


def test_without_a_signal_nothing_is_raised(installed: None) -> None:
    stopping.raise_if_stopped()


def test_the_handlers_still_raise_where_the_signal_lands(installed: None) -> None:
    with pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass


def test_a_stop_handled_on_purpose_is_not_raised_again(installed: None) -> None:
    """`docs --serve` ends on Ctrl-C with exit 0: the signal is its expected end."""
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    stopping.handled()
    stopping.raise_if_stopped()
