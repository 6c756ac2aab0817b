"""A stop signal Python drops (raised where exceptions are ignored) is raised again."""

from __future__ import annotations

import os
import signal
import sys
import weakref
from collections.abc import Iterator

import pytest

from retailctl import stopping
from retailctl.errors import Terminated


class _Owner:
    pass


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """retailctl's handlers in this process for the test, pytest's own back after."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(stopping, "_received", None)
    stopping.install()
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _signal_inside_weakref_callback(signum: int) -> list[str]:
    """Deliver `signum` while a weakref callback runs, where CPython prints an exception and
    drops it (the import lock's callbacks are where a real Ctrl-C was lost). Returns what ran
    after the signal inside the callback."""
    ran: list[str] = []

    def callback(_: object) -> None:
        os.kill(os.getpid(), signum)  # the handler runs at the next bytecode boundary: here
        for _ in range(1000):
            pass
        ran.append("callback went on")  # not reached: the handler's exception ended it

    owner = _Owner()
    reference = weakref.ref(owner, callback)
    del owner  # the callback runs now; its exception is printed and dropped
    assert reference() is None
    return ran


@pytest.mark.parametrize(
    ("signum", "exception"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)]
)
def test_a_signal_dropped_in_a_weakref_callback_is_raised_again(
    installed: None, signum: int, exception: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    assert _signal_inside_weakref_callback(signum) == []  # the exception did end the callback
    assert dropped == [exception]  # and Python dropped it ("Exception ignored in ...")
    with pytest.raises(exception):
        stopping.raise_if_stopped()
    with pytest.raises(exception):  # stopped stays stopped
        stopping.raise_if_stopped()


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
