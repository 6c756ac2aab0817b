"""ordered_map: several calls at once, answers in order, bounded, errors at their turn."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from retailctl.prefetch import ordered_map
from tests.helpers import wait_until


class Calls:
    """A function whose calls block until released, recording which items were called."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.running = self.most_running = 0
        self.release: dict[int, threading.Event] = {}
        self.lock = threading.Lock()

    def __call__(self, item: int) -> int:
        with self.lock:
            self.started.append(item)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            gate = self.release.setdefault(item, threading.Event())
        try:
            assert gate.wait(30), f"item {item} never released"
            if item == 13:
                raise ValueError("unlucky")
            return item * 10
        finally:
            with self.lock:
                self.running -= 1

    def release_all(self, up_to: int) -> None:
        for item in range(up_to):
            self.let_go(item)

    def let_go(self, item: int) -> None:
        with self.lock:
            self.release.setdefault(item, threading.Event()).set()


def pulled(counter: list[int]) -> Iterator[int]:
    """Endless items, counting how many were taken."""
    for item in itertools.count():
        counter[0] += 1
        yield item


def test_answers_come_in_order_though_they_finish_in_reverse() -> None:
    calls = Calls()
    answers = ordered_map(calls, range(4), workers=4)
    taken: list[int] = []
    reader = threading.Thread(target=lambda: taken.extend(answers))
    reader.start()
    wait_until(lambda: sorted(calls.started) == [0, 1, 2, 3], 30, "four calls in flight at once")
    for item in (3, 2, 1):
        calls.let_go(item)
    assert taken == []  # item 0 is still out
    calls.let_go(0)
    reader.join(30)
    assert taken == [0, 10, 20, 30]


def test_it_runs_at_most_workers_calls_and_takes_only_one_item_more_however_many_there_are() -> None:
    calls, counter = Calls(), [0]
    answers = ordered_map(calls, pulled(counter), workers=3)
    calls.let_go(0)
    assert next(answers) == 0
    # item 0 done, its thread took item 3: three running (1, 2, 3), nothing more taken
    wait_until(lambda: len(calls.started) == 4, 30, "items 1-3 running")
    assert counter[0] == 4 and calls.running == 3 and calls.most_running == 3
    answers.close()
    calls.release_all(4)


def test_an_error_surfaces_at_its_item_s_turn_after_the_answers_before_it() -> None:
    calls = Calls()
    calls.release_all(16)
    answers = ordered_map(calls, range(12, 16), workers=2)
    assert next(answers) == 120
    with pytest.raises(ValueError, match="unlucky"):
        next(answers)


def test_a_consumer_that_stops_starts_no_new_call_and_its_threads_end() -> None:
    threads_before = threading.active_count()
    calls, counter = Calls(), [0]
    answers = ordered_map(calls, pulled(counter), workers=2)
    calls.let_go(0)
    assert next(answers) == 0
    wait_until(lambda: len(calls.started) == 3, 30, "items 1 and 2 running")
    answers.close()
    calls.release_all(3)
    wait_until(lambda: calls.running == 0, 30, "the calls in flight to end")
    assert counter[0] == 3 and sorted(calls.started) == [0, 1, 2]
    wait_until(lambda: threading.active_count() == threads_before, 30, "the two workers to end")
