"""Prometheus metrics of the last run, as a textfile for node_exporter's textfile collector.

A cron job has no endpoint to scrape: each run rewrites one `.prom` file (atomically, through
prometheus-client's `write_to_textfile`: a temp file renamed over it) and node_exporter serves
it. What this run could not measure (the database was down, or a single step ran) is carried
over from the previous file, so `retailctl_last_success_timestamp_seconds` survives failures.
prometheus-client is imported only when a file is written: an unmonitored run never pays for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from retailctl.load.tables import TABLES
from retailctl.status import EXTRACT_TOTALS, GOLD_TABLES, count_rows
from retailctl.store import state

LAST_SUCCESS = """
select extract(epoch from max(finished_at))::float8 from meta.pipeline_runs where status = 'success'
"""
# Gold's freshness as dbt measures a source's: the age of the newest silver data it was built from.
GOLD_STATE = """
select extract(epoch from now() - silver_loaded_at)::float8, extract(epoch from finished_at)::float8
from meta.gold_state where step = 'transform'
"""


@dataclass
class Figures:
    """The warehouse as a run leaves it, read while that run still holds the lock."""

    rows: dict[tuple[str, str], int] = field(default_factory=dict)  # (layer, table) -> rows
    rejected_records: int = 0
    inconsistent_sales: int = 0
    sales_cursor: int = 1
    last_success: float | None = None  # epoch seconds
    gold_freshness: float | None = None  # seconds
    gold_built: float | None = None  # epoch seconds


def collect(conn: psycopg.Connection) -> Figures:
    """Row counts per layer (exact: a count per table), rejects, the cursor, the last success
    and Gold's freshness, read on `conn` (autocommit)."""
    figures = Figures()
    for layer, tables in (("silver", [t.name for t in TABLES]), ("gold", GOLD_TABLES)):
        for table in tables:
            rows = count_rows(conn, layer, table)
            if rows is not None:
                figures.rows[layer, table] = rows
    rejected, inconsistent, _ = conn.execute(EXTRACT_TOTALS).fetchone()  # type: ignore[misc]
    figures.rejected_records, figures.inconsistent_sales = int(rejected), int(inconsistent)
    figures.sales_cursor = state.read_cursor(conn).next_sales_id
    figures.last_success = conn.execute(LAST_SUCCESS).fetchone()[0]  # type: ignore[index]
    gold = conn.execute(GOLD_STATE).fetchone()
    if gold is not None:
        figures.gold_freshness, figures.gold_built = gold
    return figures


@dataclass
class RunOutcome:
    """What the command line knows once the run is over."""

    exit_code: int
    finished_at: float  # epoch seconds
    run_seconds: float | None = None  # None: the run never started (no lock, no database)
    step_seconds: Mapping[str, float] = field(default_factory=dict)


def families(outcome: RunOutcome, figures: Figures | None) -> list[Any]:
    """This run's metric families (prometheus_client's), what it could measure only."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def gauge(
        name: str,
        doc: str,
        value: float | None = None,
        labels: Iterable[str] = (),
        samples: Iterable[tuple[list[str], float]] = (),
    ) -> GaugeMetricFamily | None:
        family = GaugeMetricFamily(name, doc, labels=list(labels) or None)
        if value is not None:
            family.add_metric([], value)
        for label_values, sample in samples:
            family.add_metric(label_values, sample)
        return family if family.samples else None

    found = [
        gauge("retailctl_last_exit_code", "Exit code of the last run (0 = success).", outcome.exit_code),
        gauge(
            "retailctl_last_run_timestamp_seconds",
            "When the last run ended (Unix time).",
            outcome.finished_at,
        ),
        gauge(
            "retailctl_run_duration_seconds",
            "Wall time of the last run that took the lock.",
            outcome.run_seconds,
        ),
        gauge(
            "retailctl_step_duration_seconds",
            "Seconds the step took the last time it ran (0 when skipped: nothing new).",
            labels=["step"],
            samples=[([step], s) for step, s in outcome.step_seconds.items()],
        ),
    ]
    if figures is not None:
        found += [
            gauge(
                "retailctl_last_success_timestamp_seconds",
                "When the last successful run ended (Unix time).",
                figures.last_success,
            ),
            gauge(
                "retailctl_rows",
                "Rows per table of the Silver and Gold layers.",
                labels=["layer", "table"],
                samples=[([layer, table], n) for (layer, table), n in figures.rows.items()],
            ),
            gauge("retailctl_sales_cursor", "The next sale id extract reads.", figures.sales_cursor),
            gauge(
                "retailctl_gold_freshness_seconds",
                "Age of the newest silver data Gold was built from.",
                figures.gold_freshness,
            ),
            gauge(
                "retailctl_gold_built_timestamp_seconds",
                "When Gold was last built (Unix time).",
                figures.gold_built,
            ),
        ]
        rejected = CounterMetricFamily(
            "retailctl_rejected_records",
            "Source records rejected into bronze/_rejected, ever.",
            value=figures.rejected_records,
        )
        inconsistent = CounterMetricFamily(
            "retailctl_inconsistent_sales",
            "Sales whose total differs from their lines, ever.",
            value=figures.inconsistent_sales,
        )
        found += [rejected, inconsistent]
    return [family for family in found if family is not None]


def merge(new: list[Any], old: list[Any]) -> list[Any]:
    """`new`, plus every sample of `old` that `new` has no value for (same name and labels)."""
    by_name = {family.name: family for family in new}
    merged = list(new)
    for family in old:
        current = by_name.get(family.name)
        if current is None:
            merged.append(family)
            continue
        have = {(s.name, tuple(sorted(s.labels.items()))) for s in current.samples}
        current.samples += [
            s for s in family.samples if (s.name, tuple(sorted(s.labels.items()))) not in have
        ]
    return merged


def read_previous(path: Path) -> list[Any]:
    """The families of the file a previous run wrote; none when it is missing or unreadable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return list(text_string_to_metric_families(path.read_text()))
    except (OSError, ValueError, UnicodeDecodeError):
        return []


class _Snapshot:
    """A collector of fixed families, for a registry of its own."""

    def __init__(self, found: list[Any]) -> None:
        self.found = found

    def collect(self) -> Iterable[Any]:
        return self.found


def write(path: Path, outcome: RunOutcome, figures: Figures | None) -> None:
    """Write the textfile atomically (a temp file beside it, renamed over it)."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    found = merge(families(outcome, figures), read_previous(path))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(found))  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
