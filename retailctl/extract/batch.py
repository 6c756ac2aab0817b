"""One batch of bronze files (an entity's files and its rejects), made durable together."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retailctl.bronze_files import relative_path
from retailctl.bronze_store import BronzeStore, Writer, open_bronze

STAMPED_FIELDS = ("_ingestion_ts", "_batch_id", "_reject_reason")


class Batch:
    """The files of one batch: one per dataset (and one per rejected entity), committed together.

    Every record written carries the batch's `_ingestion_ts` and `_batch_id` (`stamp`).
    """

    def __init__(self, bronze: Path | BronzeStore) -> None:
        self.bronze = open_bronze(bronze)
        self.moment = datetime.now(UTC)
        self.batch_id = str(uuid.uuid4())
        self.stamp = {"_ingestion_ts": self.moment.isoformat(), "_batch_id": self.batch_id}
        self._files: dict[tuple[str, bool], Writer] = {}
        self.relatives: list[str] = []  # of the non-rejected files committed: the manifest's keys
        self._committed = False

    def file(self, dataset: str, rejected: bool = False) -> Writer:
        key = (dataset, rejected)
        if key not in self._files:
            relative = relative_path(dataset, self.moment, self.batch_id, rejected)
            self._files[key] = self.bronze.writer(relative)
        return self._files[key]

    def reject(self, entity: str, record: Any, reason: str) -> None:
        """The record as sent, stamped, with its reason; nested under `_record` when it is not
        an object or has a field named like one of ours (so nothing of it is overwritten)."""
        own = isinstance(record, dict) and not any(name in record for name in STAMPED_FIELDS)
        row = dict(record) if own else {"_record": record}
        row.update(self.stamp)
        row["_reject_reason"] = reason
        self.file(entity, rejected=True).write(row)

    def discard(self, dataset: str) -> None:
        ndjson = self._files.pop((dataset, False), None)
        if ndjson is not None:
            ndjson.abort()

    def commit(self) -> list[str]:
        """Make every file durable, then give each its name; returns the paths of the
        non-rejected ones. A failure while writing (a full disk) leaves no file of the batch.

        Once only: a failure after it (the cursor update) must not commit the files twice.
        """
        if self._committed:
            return []
        self._committed = True
        try:
            for ndjson in self._files.values():
                ndjson.close()
        except BaseException:
            self.abort()
            raise
        paths = []
        for (dataset, rejected), ndjson in self._files.items():
            path = ndjson.publish()
            if not rejected:
                paths.append(str(path))
                self.relatives.append(relative_path(dataset, self.moment, self.batch_id))
        return paths

    def abort(self) -> None:
        for ndjson in self._files.values():
            ndjson.abort()
