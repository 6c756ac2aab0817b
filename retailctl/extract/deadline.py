"""An httpx transport whose every request has a total deadline, not only one per read.

httpx's timeouts bound each socket operation: a server that sends one byte a second never
trips a 30 s read timeout and holds a request (and the pipeline lock) for a day. Here every
connect, write and read of a request gets at most the time left before its deadline, so a
request ends within `seconds` whatever the server does (its body read included).

Several threads may request through one transport at once (extract asks for the lookback
window's pages together): each thread's deadline is its own current request's, and a request's
connect, writes and reads all run on the thread that made it.
"""

from __future__ import annotations

import threading
import time
import typing
from collections.abc import Iterable

import httpcore
import httpx


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._current = threading.local()  # per thread: another's request never moves it

    @property
    def at(self) -> float:
        at = getattr(self._current, "at", None)
        return self.start() if at is None else at

    def start(self) -> float:
        self._current.at = time.monotonic() + self.seconds
        return self._current.at

    def bound(self, timeout: float | None) -> float:
        """The time the next socket operation may take; ReadTimeout once the deadline passed."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.passed()
        return left if timeout is None else min(timeout, left)

    def passed(self) -> httpcore.ReadTimeout:
        return httpcore.ReadTimeout(f"no complete response within {self.seconds:g} s")

    def is_over(self) -> bool:
        return time.monotonic() >= self.at


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._stream.read(max_bytes, self._deadline.bound(timeout))
        except httpcore.ReadTimeout:
            if self._deadline.is_over():  # cut by the deadline, not by a silent server
                raise self._deadline.passed() from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.bound(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: typing.Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._stream.start_tls(ssl_context, server_hostname, self._deadline.bound(timeout)),
            self._deadline,
        )

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, self._deadline.bound(timeout), local_address, socket_options
        )
        return _Stream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, self._deadline.bound(timeout), socket_options)
        return _Stream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (no proxy), its connection pool on a deadline-keeping backend."""

    def __init__(self, seconds: float, *, tls: bool = True) -> None:
        # httpx has no public way to hand its pool a network backend, so the pool (all that
        # HTTPTransport.__init__ sets up) is made here instead. Its TLS context loads the CA
        # bundle (40-80 ms, a tenth of an idle run): only for an https source.
        self._deadline = _Deadline(seconds)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context() if tls else None, network_backend=_Backend(self._deadline)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._deadline.start()
        return super().handle_request(request)
