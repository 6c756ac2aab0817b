"""Serve the mock API with uvicorn, in the foreground or on a background thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from mock_api.app import MockConfig, create_app


def serve(config: MockConfig, host: str = "127.0.0.1", port: int = 4010) -> None:
    """Serve until interrupted (`retailctl api serve`)."""
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)


class BackgroundServer:
    """The mock API on a free loopback port in a daemon thread, for demo mode and tests."""

    def __init__(self, config: MockConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.url = f"http://{host}:{self._socket.getsockname()[1]}"
        uv_config = uvicorn.Config(create_app(config), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="mock-api", daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the mock API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
