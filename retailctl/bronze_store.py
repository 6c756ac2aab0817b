"""Where bronze files live: a local directory or an object store, behind one small interface.

Extract writes, load reads, `bronze prune` deletes, verify and status list: all through a
`BronzeStore`, by the file's relative name in the layout of `bronze_files`
(`<dataset>/dt=YYYY-MM-DD/<ts>_<batch>.ndjson`, the manifest's key). Both stores give the
same guarantees: a file is visible complete or not at all (disk: temp name, fsync, rename;
S3: one PUT), and a listing can start at a partition, so an hourly load lists the last days,
not years of history. `open_bronze` picks the store from RETAIL_BRONZE_URL.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

from retailctl.bronze_files import TEMP_SUFFIX, NdjsonFile, fsync_dir, remove_stale_temp_files


@dataclass(frozen=True)
class Entry:
    """A listed bronze file: its relative name, size and version (mtime_ns on disk, a number
    from the ETag on S3: it changes when the content does); `problem` when it is not loadable
    as found (a symlink)."""

    relative: str
    size: int
    version: int
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]

    @property
    def partition(self) -> str:
        parts = self.relative.split("/")
        return parts[-2] if len(parts) >= 2 else ""


class Writer(Protocol):
    """One NDJSON file being written: invisible until `publish`."""

    rows: int

    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    def publish(self) -> Any: ...
    def commit(self) -> Any: ...
    def abort(self) -> None: ...


class BronzeStore(Protocol):
    url: str  # the root as a user would write it (a path or s3://bucket/prefix): for messages
    remote: bool  # listing is by request: list from a partition, never the whole history

    def check(self) -> None:
        """Fail early (ConfigError, CredentialsRejected…) when the store cannot be used."""

    def location(self, relative: str) -> str: ...
    def writer(self, relative: str) -> Writer: ...
    def list(self, dataset: str, since: str | None = None) -> Iterator[Entry]:
        """The `*.ndjson` files of `dataset` (or `_rejected/<entity>`), partitions in order,
        from partition `since` (`dt=YYYY-MM-DD`) on."""
        ...

    def open(self, relative: str) -> BinaryIO: ...
    def exists(self, relative: str) -> bool: ...
    def delete(self, relative: str) -> None: ...
    def remove_stale_temp_files(self) -> int: ...


class LocalStore:
    """Bronze in a directory: what retailctl always did."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def check(self) -> None:
        return None

    def location(self, relative: str) -> str:
        return str(self.root / relative)

    def writer(self, relative: str) -> NdjsonFile:
        path = self.root / relative
        (path.parent / f".{path.name}{TEMP_SUFFIX}").unlink(missing_ok=True)  # an earlier try's
        return NdjsonFile(path.parent, path.name)

    def list(self, dataset: str, since: str | None = None) -> Iterator[Entry]:
        """Never follows a symlink: one in place of a directory or file is listed as a problem."""
        directory = self.root / dataset
        if directory.is_symlink():
            yield Entry(dataset, 0, 0, "a symlink (never followed)")
            return
        if not directory.is_dir():
            return
        for partition in sorted(directory.iterdir()):
            if not partition.name.startswith("dt=") or (since is not None and partition.name < since):
                continue
            if partition.is_symlink():
                yield Entry(f"{dataset}/{partition.name}", 0, 0, "a symlink (never followed)")
                continue
            if not partition.is_dir():
                continue
            for path in sorted(partition.iterdir()):
                if not path.name.endswith(".ndjson") or path.name.startswith("."):
                    continue
                relative = f"{dataset}/{partition.name}/{path.name}"
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode):
                    yield Entry(relative, 0, 0, "not a regular file (a symlink?)")
                else:
                    yield Entry(relative, info.st_size, info.st_mtime_ns)

    def open(self, relative: str) -> BinaryIO:
        """Without following a symlink put in the file's place since it was listed."""
        return os.fdopen(os.open(self.root / relative, os.O_RDONLY | os.O_NOFOLLOW), "rb")

    def exists(self, relative: str) -> bool:
        return (self.root / relative).is_file()

    def delete(self, relative: str) -> None:
        """Unlink durably; the partition directory goes with its last file."""
        path = self.root / relative
        path.unlink()
        fsync_dir(path.parent)
        with contextlib.suppress(OSError):  # not empty: kept
            path.parent.rmdir()

    def remove_stale_temp_files(self) -> int:
        return remove_stale_temp_files(self.root)


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at its ends); ValueError for what is not s3://bucket[/prefix]."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"{parts.scheme}:// is not supported: expected a local path or s3://bucket/prefix")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials do not belong in the URL: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        )
    if not parts.netloc or parts.query or parts.fragment:
        raise ValueError("expected s3://bucket or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def is_object_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def open_bronze(location: str | Path | BronzeStore) -> BronzeStore:
    """The store for RETAIL_BRONZE_URL's value (a path, file:// or s3://); a store as is."""
    if not isinstance(location, str | Path):
        return location
    text = str(location)
    if is_object_url(text):
        from retailctl.bronze_s3 import S3Store  # boto3 is imported only when Bronze is in S3

        return S3Store.from_url(text)
    return LocalStore(Path(text.removeprefix("file://")))
