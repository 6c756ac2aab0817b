"""A run seen from outside: the Prometheus textfile and the dead-man's-switch pings.

The monitor hears the run through the pipeline's observer hooks (the start, once the lock is
held; the end, while the database is still open) and is finished by the command line with the
exit code the process is about to exit with, so the code reported is the code cron sees.
Nothing here fails a run: each problem becomes a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from retailctl import healthcheck, metrics
from retailctl.config import Settings
from retailctl.errors import LockHeld
from retailctl.pipeline import RunObserver, RunResult

Warn = Callable[[str], None]


class Monitor(RunObserver):
    """Reports one command's run: metrics textfile and pings, each only when configured."""

    def __init__(self, settings: Settings, warn: Warn) -> None:
        self.settings = settings
        self._warn = warn  # not RunObserver.warn: the run's own warnings are the view's
        self.run: RunResult | None = None
        self.figures: metrics.Figures | None = None

    @classmethod
    def for_settings(cls, settings: Settings, warn: Warn) -> Monitor | None:
        """A monitor, or None when neither RETAIL_METRICS_FILE nor RETAIL_HEALTHCHECK_URL is set."""
        if settings.metrics_file is None and settings.healthcheck_url is None:
            return None
        return cls(settings, warn)

    def run_started(self, run: RunResult) -> None:
        self.run = run
        self._ping("/start")

    def run_ended(self, run: RunResult, conn: psycopg.Connection) -> None:
        if self.settings.metrics_file is None:
            return
        try:
            self.figures = metrics.collect(conn)
        except (psycopg.Error, OSError) as exc:
            self._warn(
                f"metrics: could not read the database's figures ({exc}); the previous values are kept"
            )

    def finish(self, exit_code: int, message: str = "") -> None:
        """Report the end of the command with the code it exits with.

        Exit 75 reports nothing: another run holds the lock, and it reports when it ends.
        """
        if exit_code == LockHeld.exit_code:
            return
        if self.settings.metrics_file is not None:
            self._write_metrics(exit_code)
        self._ping("" if exit_code == 0 else f"/{exit_code}", body=message)

    def _write_metrics(self, exit_code: int) -> None:
        assert self.settings.metrics_file is not None
        outcome = metrics.RunOutcome(exit_code=exit_code, finished_at=time.time())
        if self.run is not None:
            outcome.run_seconds = self.run.seconds
            outcome.step_seconds = {step.step: step.seconds for step in self.run.steps}
        try:
            metrics.write(self.settings.metrics_file, outcome, self.figures)
        except OSError as exc:
            self._warn(f"metrics: could not write {self.settings.metrics_file}: {exc}")

    def _ping(self, suffix: str, body: str = "") -> None:
        url = self.settings.healthcheck_url
        if url is None:
            return
        run_id = self.run.run_id if self.run is not None else None
        problem = healthcheck.ping(url, suffix, body=self.settings.redact(body), run_id=run_id)
        if problem is not None:
            self._warn(f"healthcheck ping {suffix or '(success)'} failed: {problem}")
