"""A stop signal Python drops (raised where exceptions are ignored) is raised again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from retailctl import stopping
from retailctl.errors import Terminated
from retailctl.extract.source import SourceClient


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
# handler raises (the import lock's callbacks are where a real Ctrl-C was lost). Run in a
# process of its own: Python's own report of a dropped exception goes to its real stderr.
DROP_A_SIGNAL = """
import os, signal, sys, weakref

def drop(signum):
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
    print("callback ended by the signal" if not ran else "callback went on", flush=True)
"""
RAISED_AGAIN = """
from retailctl import stopping
from retailctl.errors import Terminated

stopping.install()
drop(getattr(signal, sys.argv[1]))
for _ in range(2):
    try:
        stopping.raise_if_stopped()
        print("nothing raised")
    except (KeyboardInterrupt, Terminated) as exc:
        print(type(exc).__name__, "raised again")
"""
# `retailctl config` with the signal dropped while it reads its settings.
COMMAND_ENDS_STOPPED = """
from retailctl.cli import main, runner

read_settings = runner.load_settings
signum = getattr(signal, sys.argv[1])

def load_settings(*args, **kwargs):
    drop(signum)
    return read_settings(*args, **kwargs)

runner.load_settings = load_settings
sys.argv = ["retailctl", "config"]
main()
"""
SIGNALS = [("SIGINT", "KeyboardInterrupt", 130), ("SIGTERM", "Terminated", 143)]


def _python(script: str, name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RETAIL_")}
    return subprocess.run(
        [sys.executable, "-c", DROP_A_SIGNAL + script, name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**environment, "RETAIL_DATA_DIR": str(cwd / "data")},
    )


@pytest.mark.parametrize(("name", "exception", "code"), SIGNALS)
def test_a_signal_python_drops_in_a_weakref_callback_is_raised_again_quietly(
    name: str, exception: str, code: int, tmp_path: Path
) -> None:
    ran = _python(RAISED_AGAIN, name, tmp_path)
    assert (ran.returncode, ran.stderr) == (0, "")  # no "Exception ignored ... Traceback"
    assert ran.stdout.splitlines() == [
        "callback ended by the signal",
        f"{exception} raised again",
        f"{exception} raised again",  # once stopped, stopped
    ]


@pytest.mark.parametrize(("name", "exception", "code"), SIGNALS)
def test_a_command_whose_stop_signal_python_dropped_exits_as_stopped(
    name: str, exception: str, code: int, tmp_path: Path
) -> None:
    """The command's work went on to its end; it still exits as a stopped command does."""
    ran = _python(COMMAND_ENDS_STOPPED, name, tmp_path)
    assert ran.stdout.splitlines()[0] == "callback ended by the signal"
    assert ran.returncode == code, ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stderr.splitlines()[-1].startswith(
        "error: interrupted" if code == 130 else "error: stopped by SIGTERM"
    )


def test_no_source_request_is_made_once_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: requested.append(request) or httpx.Response(200))
    source = SourceClient(httpx.Client(base_url="http://source.invalid", transport=transport))
    monkeypatch.setattr(stopping, "_received", Terminated)
    with pytest.raises(Terminated):
        source.page("/sales", {"start_sales_id": 1, "limit": 10})
    assert requested == []


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
