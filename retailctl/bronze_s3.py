"""Bronze in S3 or any S3-compatible store (MinIO, Ceph, R2…), through boto3.

The endpoint, region and credentials come from the standard AWS variables and files
(AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
~/.aws/config): retailctl's own settings hold only `s3://bucket/prefix`, never a secret.

A file is buffered (in memory, then in an unlinked temporary file) and sent in one PUT: an
object is visible complete or not at all, and a killed extract leaves nothing behind (no temp
object, no unfinished multipart upload). Transient errors (throttling, 5xx, a dropped
connection) are retried by botocore's standard mode, with exponential backoff and jitter;
what remains is mapped onto retailctl's errors: credentials refused 77, no such bucket 78,
store unreachable 69.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from retailctl.bronze_store import Entry, parse_s3_url
from retailctl.errors import (
    BronzeFileError,
    ConfigError,
    CredentialsRejected,
    StorageFailed,
    StoreUnavailable,
)

SPOOL_BYTES = 16 << 20  # a file is held in memory up to this size, then in a temporary file
MAX_PUT_BYTES = 5 << 30  # S3's limit for one PUT; a bronze file is far smaller
READ_CHUNK = 1 << 20
ATTEMPTS = 6  # botocore's standard retry mode, unless AWS_MAX_ATTEMPTS / AWS_RETRY_MODE say
REJECTED_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
        "403",
    }
)
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404"})
T = TypeVar("T")


def make_client(session: Any = None) -> Any:
    """An S3 client configured from the AWS environment and files, with retries."""
    session = session or boto3.session.Session()
    retries = None
    if not (os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE")):
        retries = {"mode": "standard", "max_attempts": ATTEMPTS}
    config = Config(retries=retries, connect_timeout=10, read_timeout=60)  # type: ignore[arg-type]
    return session.client("s3", config=config)


class S3Store:
    """Bronze under s3://bucket/prefix."""

    remote = True

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.client = client
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, make_client())

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def location(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    def call(self, operation: Callable[..., T], **kwargs: Any) -> T:
        """One client call, botocore's errors as retailctl's (after botocore's retries)."""
        try:
            return operation(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            raise self.error(exc) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise ConfigError(
                f"no AWS credentials for {self.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE (or run with an instance/role identity)"
            ) from None
        except (ConnectionError, HTTPClientError) as exc:
            raise StoreUnavailable(
                f"the object store for {self.url} is unreachable after retries: {exc}"
            ) from None
        except BotoCoreError as exc:
            raise StorageFailed(f"the object store for {self.url} failed: {exc}") from None

    def error(self, exc: ClientError) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in MISSING_BUCKET_CODES:
            return ConfigError(
                f"the bucket {self.bucket!r} does not exist (RETAIL_BRONZE_URL={self.url}): "
                "create it, or fix RETAIL_BRONZE_URL or AWS_ENDPOINT_URL"
            )
        if code in REJECTED_CODES:
            return CredentialsRejected(
                f"the object store refused the AWS credentials for {self.url} ({code}): check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the bucket's policy"
            )
        if isinstance(status, int) and (status >= 500 or status == 429):
            return StoreUnavailable(f"the object store for {self.url} kept failing after retries ({code})")
        message = error.get("Message")
        return StorageFailed(f"the object store for {self.url} refused a request ({code}: {message})")

    def check(self) -> None:
        """One small listing: unlike a HEAD, its error answers carry their code."""
        self.call(self.client.list_objects_v2, Prefix=self.prefix, MaxKeys=1)

    def writer(self, relative: str) -> S3Object:
        return S3Object(self, relative)

    def list(self, dataset: str, since: str | None = None) -> Iterator[Entry]:
        base = f"{self.key(dataset)}/"
        partitions = sorted(
            common["Prefix"]
            for page in self._pages(Prefix=base, Delimiter="/")
            for common in page.get("CommonPrefixes", [])
        )
        for partition in partitions:
            name = partition[len(base) :].rstrip("/")
            if not name.startswith("dt=") or (since is not None and name < since):
                continue
            for page in self._pages(Prefix=partition, Delimiter="/"):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(self.prefix) :]
                    file = relative.rsplit("/", 1)[-1]
                    if file.endswith(".ndjson") and not file.startswith("."):
                        yield Entry(relative, item["Size"], etag_version(item["ETag"]))

    def _pages(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            page = self.call(self.client.list_objects_v2, **kwargs, **token)
            yield page
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def open(self, relative: str) -> BinaryIO:
        try:
            body = self.call(self.client.get_object, Key=self.key(relative))["Body"]
        except StorageFailed as exc:
            if "NoSuchKey" in str(exc):
                raise BronzeFileError(f"{relative}: gone from {self.url} since it was listed") from None
            raise
        return io.BufferedReader(_Body(body, self.url), READ_CHUNK)  # type: ignore[arg-type]

    def exists(self, relative: str) -> bool:
        try:
            self.call(self.client.head_object, Key=self.key(relative))
        except ConfigError:  # a HEAD's 404 carries no code: the object is missing, not the bucket
            return False
        return True

    def delete(self, relative: str) -> None:
        self.call(self.client.delete_object, Key=self.key(relative))

    def put(self, relative: str, body: BinaryIO, size: int) -> None:
        if size > MAX_PUT_BYTES:
            raise StorageFailed(f"{relative}: {size} bytes is more than one PUT takes (5 GiB)")
        self.call(
            self.client.put_object,
            Key=self.key(relative),
            Body=body,
            ContentLength=size,
            ContentType="application/x-ndjson",
        )

    def remove_stale_temp_files(self) -> int:
        return 0  # a PUT never leaves a partial object


def etag_version(etag: str) -> int:
    """60 bits of the ETag (the content's MD5 for a single PUT) as the manifest's version."""
    digits = "".join(c for c in etag if c in "0123456789abcdefABCDEF")
    return int(digits[:15] or "0", 16)


class _Body(io.RawIOBase):
    """A GetObject body as a raw stream (for BufferedReader: line iteration, read(n))."""

    def __init__(self, body: Any, url: str) -> None:
        self.body = body
        self.url = url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.body.read(len(buffer))
        except (ConnectionError, HTTPClientError, BotoCoreError) as exc:
            raise StoreUnavailable(f"reading from {self.url} failed: {exc}") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


class S3Object:
    """One NDJSON object being written: buffered, then sent in one PUT by `publish`."""

    def __init__(self, store: S3Store, relative: str) -> None:
        self.store = store
        self.relative = relative
        # on disk past SPOOL_BYTES, in an unlinked file: nothing is left behind on a crash
        self._buffer: Any = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115 - closed by publish/abort
        self.rows = 0

    def write(self, record: dict[str, Any]) -> None:
        self._buffer.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.rows += 1

    def close(self) -> None:
        self._buffer.flush()

    def publish(self) -> str:
        try:
            size = self._buffer.tell()
            self._buffer.seek(0)
            self.store.put(self.relative, self._buffer, size)
        finally:
            self._buffer.close()
        return self.store.location(self.relative)

    def commit(self) -> str:
        self.close()
        return self.publish()

    def abort(self) -> None:
        self._buffer.close()
