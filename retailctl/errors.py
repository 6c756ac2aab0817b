"""The one exception tree of retailctl; the CLI maps each class to an exit code.

RetailctlError (1)
├── ConfigError (78)             a setting is invalid or missing
│   ├── DataDirNotWritable (78)  RETAIL_DATA_DIR cannot be written (permissions, read-only)
│   └── PrivilegeMissing (78)    the database role lacks a privilege retailctl needs
├── SourceUnavailable (69)       the API did not answer usefully after retries
├── DatabaseUnavailable (69)     the database could not be reached
├── StoreUnavailable (69)        the object store holding Bronze kept failing after retries
├── CredentialsRejected (77)     the API key or the database credentials were refused
├── LockHeld (75)                another run holds the pipeline lock
├── ContractViolation (1)        the API answered outside its contract: an error status
│                                retrying cannot fix, or a body of the wrong shape
├── BronzeFileError (1)          a bronze file is malformed or changed after it was loaded
├── MigrationError (1)           recorded migrations do not match the schema/ files
├── StepFailed (1)               a step failed for another stated reason
├── StorageFailed (1)            the data dir's disk failed a write (full, I/O error)
└── DataTestsFailed (3)          dbt data tests failed
    └── LayersDisagree (3)       `verify`: bronze, silver, the fact and the mart (or the
                                 source's count of sales) differ

Terminated (143), a BaseException like KeyboardInterrupt (130): SIGTERM, after a clean rollback
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any


class RetailctlError(Exception):
    """Base class: a failure retailctl can explain in one line."""

    exit_code = 1


class ConfigError(RetailctlError):
    """A setting is invalid or missing."""

    exit_code = 78


class DataDirNotWritable(ConfigError):
    """The data dir (or a directory under it) cannot be written: permissions, read-only."""


class PrivilegeMissing(ConfigError):
    """The database role lacks a privilege retailctl needs (CREATE, write on its schemas)."""


class SourceUnavailable(RetailctlError):
    """The source API could not be reached or kept failing after retries."""

    exit_code = 69


class DatabaseUnavailable(RetailctlError):
    """The database could not be reached."""

    exit_code = 69


class StoreUnavailable(RetailctlError):
    """The object store holding Bronze could not be reached or kept failing after retries."""

    exit_code = 69


class CredentialsRejected(RetailctlError):
    """The API key, the database or the object store credentials were refused."""

    exit_code = 77


class LockHeld(RetailctlError):
    """Another run holds the pipeline lock: try later."""

    exit_code = 75


class ContractViolation(RetailctlError):
    """The API answered outside its contract: an error status (400, 404…) or a malformed body."""


class BronzeFileError(RetailctlError):
    """A bronze file is malformed, or changed after it was loaded."""


class MigrationError(RetailctlError):
    """The database's recorded migrations do not match the shipped schema/ files.

    An applied file whose checksum changed, or versions no shipped file knows: a broken install
    or a database made by another (pre-release) version, never something to apply over.
    """


class StepFailed(RetailctlError):
    """A pipeline step failed for a stated reason."""


class StorageFailed(RetailctlError):
    """A write to the data dir failed for the disk's sake: full, quota, I/O error."""


def from_os_error(exc: OSError) -> RetailctlError:
    """An OSError as retailctl's one line: a place that cannot be written is a setting to fix
    (78); a full disk or an I/O error fails the step (1)."""
    where = f": {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataDirNotWritable(
            f"cannot write{where} ({reason}); RETAIL_DATA_DIR must be a directory this user can write"
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFailed(
            f"no space left{where} ({reason}); free space under RETAIL_DATA_DIR "
            "(`retailctl bronze prune`) and run again"
        )
    return StorageFailed(f"file system error{where} ({reason})")


class DataTestsFailed(RetailctlError):
    """dbt data tests failed."""

    exit_code = 3


class LayersDisagree(DataTestsFailed):
    """`verify` found a day on which the layers differ, or a source count that differs."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details  # the whole result: in the --json error object


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that transactions roll back on the way out.

    A BaseException, like KeyboardInterrupt, so that `except Exception` does not swallow it.
    """

    exit_code = 143


def mark_step(exc: BaseException, step: str) -> None:
    """Note on an error the pipeline step it stopped (the first to note it wins)."""
    if getattr(exc, "retailctl_step", None) is None:
        with contextlib.suppress(AttributeError):  # an exception type with __slots__
            exc.retailctl_step = step  # type: ignore[attr-defined]


def step_of(exc: BaseException) -> str | None:
    """The pipeline step an error stopped, if it happened inside one."""
    return getattr(exc, "retailctl_step", None)
