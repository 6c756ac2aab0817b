"""Work ahead of a consumer on background threads.

`prefetch` runs an iterator a few items ahead: extract has the next page in flight while the
current one is written; load parses the next file while the database upserts the current one.
`ordered_map` calls a function on several items at once and yields the answers in order:
extract requests the pages of its lookback window together.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
A = TypeVar("A")

_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield from `items`, produced on a thread up to `depth` items ahead; an error raised
    by the producer surfaces in the consumer, in order, and a consumer that stops early
    stops the producer."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        """Wait for room; False once the consumer has gone."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def ordered_map(function: Callable[[A], T], items: Iterable[A], workers: int) -> Iterator[T]:
    """Yield `function(item)` for each item in order, computed on `workers` daemon threads at
    most `workers` items ahead of the consumer (memory stays bounded however many items).

    An error raised for an item surfaces in the consumer when that item's turn comes; the items
    after it are not waited for. A consumer that stops early leaves the calls in flight to end on
    their own (daemon threads: they never hold the process open) and starts no new one.
    """
    todo: queue.Queue[_Call[A, T] | None] = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        while (call := todo.get()) is not None and not stop.is_set():
            try:
                call.value = function(call.item)
            except BaseException as exc:  # handed to the consumer, raised there
                call.error = exc
            call.done.set()

    threads = [threading.Thread(target=work, name="ordered-map", daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    ahead: deque[_Call[A, T]] = deque()
    pending = iter(items)

    def fill() -> None:
        while len(ahead) < workers and (item := next(pending, _DONE)) is not _DONE:
            ahead.append(call := _Call(item))  # type: ignore[arg-type]
            todo.put(call)

    try:
        fill()
        while ahead:
            call = ahead.popleft()
            fill()  # the threads stay busy while this answer is waited for and consumed
            call.done.wait()
            if call.error is not None:
                raise call.error
            yield call.value  # type: ignore[misc]
    finally:
        stop.set()
        for _ in threads:
            todo.put(None)


@dataclass
class _Call(Generic[A, T]):
    item: A
    value: T | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
