"""Extract and load overlapped in one run: extract says when a chunk's files are durable,
a load running beside it loads them while the next chunk is read (`run-all`)."""

from __future__ import annotations

import threading


class Arrivals:
    """The news a following load waits on: a chunk committed, extract ended, or stop now.

    A load given Arrivals makes pass after pass over the pending files, each after news, and
    returns after the first pass that started once extract had ended: every file extract
    committed is then loaded (or failed) exactly as by a load run after it.
    """

    def __init__(self) -> None:
        self._news = threading.Event()
        self._ended = threading.Event()
        self._stopped = threading.Event()

    def committed(self) -> None:
        """Extract made a chunk's files durable."""
        self._news.set()

    def end(self) -> None:
        """Extract is over: one last pass, then the load returns."""
        self._ended.set()
        self._news.set()

    def stop(self) -> None:
        """The run is failing or interrupted: the load returns after its current file."""
        self._stopped.set()
        self.end()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait(self) -> None:
        """Until the next news (returns at once if some came since the last wait)."""
        self._news.wait()
        self._news.clear()
