"""`extract`: the source API into Bronze NDJSON files, incrementally, losing nothing.

Customers and products are full snapshots (`snapshots`), sales are read from the cursor
(`sales`); both go through one HTTP client (`source`), one set of validation rules
(`records`) and batches of files that are complete or absent (`batch`).
"""

from __future__ import annotations

from collections.abc import Sequence

from retailctl.bronze_files import remove_stale_temp_files
from retailctl.config import Settings
from retailctl.extract.records import ENTITIES
from retailctl.extract.result import EntityResult
from retailctl.extract.sales import Progress, Warn, read_sales
from retailctl.extract.snapshots import SNAPSHOT_ENTITIES, read_snapshot
from retailctl.extract.source import SourceClient, make_client
from retailctl.store.db import Database

__all__ = ["ENTITIES", "EntityResult", "Progress", "Warn", "extract"]


def extract(settings: Settings, database: Database, *, entities: Sequence[str] = ENTITIES,
            from_id: int | None = None, progress: Progress | None = None,
            warn: Warn | None = None) -> list[EntityResult]:
    """Extract the given entities in order (customers, products, sales) from the configured API."""
    settings.require_source()
    assert settings.api_url is not None and settings.api_key is not None
    progress = progress or (lambda entity, count, pages, total: None)
    warn = warn or (lambda message: None)
    remove_stale_temp_files(settings.bronze_dir)  # left by a killed extract: never part of bronze
    results = []
    with make_client(settings.api_url, settings.api_key, settings.http_timeout) as http, \
            database.connect(autocommit=True, purpose="extract") as conn:
        source = SourceClient(http, attempts=settings.http_retries, warn=warn)
        for entity in SNAPSHOT_ENTITIES:
            if entity.name in entities:
                results.append(read_snapshot(entity, source, conn, settings.bronze_dir,
                                             limit=settings.page_size, progress=progress,
                                             warn=warn))
        if "sales" in entities:
            results.append(read_sales(source, conn, settings.bronze_dir, limit=settings.page_size,
                                      max_sales=settings.max_sales_per_run, from_id=from_id,
                                      progress=progress, warn=warn))
    return results
