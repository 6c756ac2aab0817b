"""A real S3-compatible server on loopback (moto in server mode, its own process) and the
helpers the Bronze-in-S3 tests share: the AWS environment, a fresh bucket, the rows in it."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import orjson

from tests.helpers import wait_until

ACCESS_KEY = "AKIARETAILTEST000001"
SECRET_KEY = "retailctl-test-secret-0f9e8d7c6b5a"  # never to appear in output, files or meta
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoServer:
    """`python -m moto.server` on a free loopback port; `env` is added to its environment
    (INITIAL_NO_AUTH_ACTION_COUNT=0: every request's credentials are checked)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotoServer:
        import os

        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 60, f"moto to answer on {self.url}", alive=self.process, interval=0.1)
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/moto-api/data.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def aws_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The standard AWS variables pointing at `endpoint`; no config file of the host is read."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        **extra,
    }


@dataclass
class Bucket:
    """A fresh bucket on the test server; Bronze under `url` (a prefix, as in production)."""

    endpoint: str
    name: str = field(default_factory=lambda: f"bronze-{uuid.uuid4().hex[:12]}")
    prefix: str = "retail/bronze"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    @property
    def env(self) -> dict[str, str]:
        return aws_env(self.endpoint)

    @property
    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create(self) -> Bucket:
        self.client.create_bucket(Bucket=self.name)
        return self

    def objects(self, under: str = "") -> list[str]:
        """Every key below the prefix (and `under`), relative to the prefix, sorted."""
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=f"{self.prefix}/{under}"
        ):
            found += [item["Key"][len(self.prefix) + 1 :] for item in page.get("Contents", [])]
        return sorted(found)

    def read(self, relative: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=f"{self.prefix}/{relative}")["Body"].read()

    def put(self, relative: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=f"{self.prefix}/{relative}", Body=body)

    def rows(self, entity: str, rejected: bool = False) -> list[dict[str, Any]]:
        """The records of an entity's files (as tests.helpers.bronze_rows reads a directory)."""
        base = f"_rejected/{entity}/" if rejected else f"{entity}/"
        rows = []
        for key in sorted(self.objects(base), key=lambda k: k.rsplit("/", 1)[-1]):
            rows += [orjson.loads(line) for line in self.read(key).splitlines()]
        return rows

    def write(self, entity: str, rows: list[dict[str, Any]], moment: datetime | None = None) -> str:
        """A bronze file as extract writes it; returns its relative name."""
        from retailctl.bronze_files import relative_path

        moment = moment or datetime.now(UTC)
        batch = str(uuid.uuid4())
        stamp = {"_ingestion_ts": moment.isoformat(), "_batch_id": batch}
        relative = relative_path(entity, moment, batch)
        self.put(relative, b"".join(orjson.dumps({**row, **stamp}) + b"\n" for row in rows))
        return relative

    def unfinished_uploads(self) -> list[Any]:
        return self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", [])


class FlakyProxy:
    """An HTTP proxy in front of the S3 server that answers every `every`-th request with a
    503 SlowDown (what S3 says when it throttles): the client must retry to get anywhere."""

    def __init__(self, upstream: str, every: int = 3) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream = upstream
        self.requests = 0
        self.refused = 0
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    proxy.requests += 1
                    refuse = proxy.requests % every == 0
                    proxy.refused += refuse
                if refuse:
                    error = b"<Error><Code>SlowDown</Code><Message>Slow down.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                answer = httpx.request(
                    self.command, f"{proxy.upstream}{self.path}", headers=headers, content=body, timeout=30
                )
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(key, value)
                payload = b"" if self.command == "HEAD" else answer.content
                length = answer.headers.get("content-length", "0") if self.command == "HEAD" else len(payload)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
