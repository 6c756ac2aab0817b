"""`docs --serve`: the generated dbt docs over HTTP, until Ctrl-C or SIGTERM.

Not `dbt docs serve`: that one binds a socketserver.TCPServer without address reuse (an
immediate restart fails with "Address already in use"), changes the working directory of the
process and lets Ctrl-C escape as a traceback. Here a ThreadingHTTPServer serves the target
directory as it is, and the caller decides how a stop ends.
"""

from __future__ import annotations

import errno
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from retailctl.errors import StepFailed


class DocsServer(ThreadingHTTPServer):
    allow_reuse_address = True  # a restart right after a stop binds the same port
    daemon_threads = True  # an open browser connection never holds up the stop


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files; no access log line per request on the operator's terminal."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def open_server(directory: Path, host: str, port: int) -> DocsServer:
    """Bind (port 0: any free port); a port in use is one clear error, not a traceback."""
    if not (directory / "index.html").is_file():
        raise StepFailed(f"no generated docs in {directory}: run `retailctl docs` first")
    handler = functools.partial(QuietHandler, directory=str(directory))
    try:
        return DocsServer((host, port), handler)
    except OSError as exc:
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StepFailed(
            f"cannot serve the docs on {host}:{port}: {reason}; choose another with --port"
        ) from None
