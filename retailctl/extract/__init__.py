"""`extract`: the source API into Bronze NDJSON files, incrementally, losing nothing.

Customers and products are full snapshots (`snapshots`), sales are read from the cursor
(`sales`); both go through one HTTP client (`source`, on a total deadline per request:
`deadline`), one set of validation rules (`records`) and batches of files that are complete or
absent (`batch`). A source answer that breaks the contract fails its entity alone: the others
still run, and `raise_for_failures` reports it after.
"""

from __future__ import annotations

from collections.abc import Sequence

from retailctl.bronze_store import open_bronze
from retailctl.config import Settings
from retailctl.errors import ContractViolation
from retailctl.extract.records import ENTITIES
from retailctl.extract.result import EntityResult
from retailctl.extract.sales import Committed, NewSales, Progress, Warn, read_sales
from retailctl.extract.snapshots import SNAPSHOT_ENTITIES, read_snapshot
from retailctl.store.db import Database

__all__ = ["ENTITIES", "EntityResult", "Progress", "Warn", "extract", "raise_for_failures"]


def extract(
    settings: Settings,
    database: Database,
    *,
    entities: Sequence[str] = ENTITIES,
    from_id: int | None = None,
    to_id: int | None = None,
    progress: Progress | None = None,
    warn: Warn | None = None,
    new_sales: NewSales | None = None,
    committed: Committed | None = None,
) -> list[EntityResult]:
    """Extract the given entities in order (customers, products, sales) from the configured API.

    An entity the source broke the contract for has `error` set; the others still ran.
    `new_sales` and `committed`: see `read_sales` (`committed` hears each snapshot written too).
    """
    # httpx is imported here, with the HTTP client: the dbt steps import this package for its
    # names alone, and httpx would add ~4 MB to their peak memory.
    from retailctl.extract.source import MIB, SourceClient, make_client

    settings.require_source()
    assert settings.api_url is not None and settings.api_key is not None
    progress = progress or (lambda entity, count, pages, total: None)
    warn = warn or (lambda message: None)
    bronze = open_bronze(settings.bronze_location)
    bronze.check()  # a missing bucket or refused credentials: before reading the source
    bronze.remove_stale_temp_files()  # left by a killed extract: never part of bronze
    results = []
    with (
        make_client(settings.api_url, settings.api_key, settings.http_timeout) as http,
        database.connect(autocommit=True, purpose="extract") as conn,
    ):
        source = SourceClient(
            http, attempts=settings.http_retries, warn=warn, max_response_bytes=settings.max_response_mb * MIB
        )
        for entity in SNAPSHOT_ENTITIES:
            if entity.name in entities:
                results.append(
                    read_snapshot(
                        entity,
                        source,
                        conn,
                        bronze,
                        limit=settings.page_size,
                        max_records=settings.max_snapshot_records,
                        progress=progress,
                        warn=warn,
                    )
                )
                if committed and results[-1].files:
                    committed()
        if "sales" in entities:
            results.append(
                read_sales(
                    source,
                    conn,
                    bronze,
                    limit=settings.page_size,
                    max_sales=settings.max_sales_per_run,
                    from_id=from_id,
                    to_id=to_id,
                    lookback=settings.sales_lookback,
                    progress=progress,
                    warn=warn,
                    new_sales=new_sales,
                    committed=committed,
                )
            )
    return results


def raise_for_failures(results: Sequence[EntityResult]) -> None:
    """One error naming every entity that failed (exit 1), after the others ran."""
    failed = [f"{result.entity}: {result.error}" for result in results if result.error]
    if failed:
        raise ContractViolation("; ".join(failed))
