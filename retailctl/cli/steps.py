"""The pipeline's steps as commands: extract, load, transform, test, verify and run-all."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated

import typer

from retailctl import gold, pipeline
from retailctl.cli import console
from retailctl.cli.render import RunView, render_dbt, render_load, render_verify
from retailctl.cli.runner import JsonOption, database_of, observer_of, run, settings_of, source_settings
from retailctl.extract import ENTITIES, extract, raise_for_failures
from retailctl.load import load
from retailctl.store.lock import pipeline_lock


def extract_command(
    ctx: typer.Context,
    entity: Annotated[
        list[str] | None,
        typer.Option(help="Only this entity (repeatable): customers, products, sales.", show_default=False),
    ] = None,
    from_id: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Backfill: read sales from this id instead of the cursor (corrections older "
            "than RETAIL_SALES_LOOKBACK).",
            show_default=False,
        ),
    ] = None,
    to_id: Annotated[
        int | None, typer.Option(min=1, help="With --from-id: stop after this sale id.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Pull the API into Bronze NDJSON files: snapshots of customers and products, new sales
    (and the last RETAIL_SALES_LOOKBACK sales again, for corrections)."""
    if to_id is not None and from_id is None:
        raise typer.BadParameter("--to-id needs --from-id", param_hint="--to-id")
    if to_id is not None and from_id is not None and to_id < from_id:
        raise typer.BadParameter(f"--to-id {to_id} is below --from-id {from_id}", param_hint="--to-id")
    entities = entity or list(ENTITIES)
    unknown = sorted(set(entities) - set(ENTITIES))
    if unknown:
        raise typer.BadParameter(
            f"unknown entity {', '.join(unknown)}; choose from {', '.join(ENTITIES)}", param_hint="--entity"
        )

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            source_settings(settings, quiet=as_json) as settings,
            database_of(settings) as database,
            pipeline.single_step(settings, database, "extract", observer_of(ctx, view)),
            view,
        ):
            results = extract(
                settings,
                database,
                entities=entities,
                from_id=from_id,
                to_id=to_id,
                progress=view.extract_progress,
                warn=view.warn,
            )
        if as_json and not any(r.error for r in results):
            console.print_json(
                {"demo": settings.serving_demo_data, "entities": [r.to_dict() for r in results]}
            )
        elif as_json:
            pass  # the error object is the document
        else:
            for result in results:
                console.info(result.summary(), step="extract")
        raise_for_failures(results)  # an entity that failed, after the others ran: exit 1

    run(ctx, work, as_json=as_json, step="extract", monitored=True)


def load_command(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(help="List the files that would load; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Load every Bronze file not loaded yet into the Silver tables, each exactly once."""

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            database_of(settings) as database,
            pipeline.single_step(settings, database, "load", observer_of(ctx, view)),
        ):
            with view:
                result = load(
                    database, settings.bronze_location, dry_run=dry_run, progress=view.load_progress
                )
            render_load(result, dry_run=dry_run, as_json=as_json, bronze_dir=settings.bronze_location)

    run(ctx, work, as_json=as_json, step="load", monitored=True)


def transform(
    ctx: typer.Context,
    select: Annotated[str, typer.Option(help="core (snapshot + dims + fact), mart, or all.")] = "all",
    full_refresh: Annotated[
        bool, typer.Option(help="Rebuild the incremental models from silver (after a model changed shape).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the Gold models with dbt: the customer snapshot, core and the mart, in DAG order."""
    if select not in gold.SELECTIONS:
        raise typer.BadParameter("choose core, mart or all", param_hint="--select")

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            database_of(settings) as database,
            pipeline.single_step(settings, database, "transform", observer_of(ctx, view)),
            view,
        ):
            results = gold.transform(
                settings, database.url, select, full_refresh=full_refresh, on_node=view.dbt_node
            )
        if as_json:
            console.print_json({"commands": [r.to_dict() for r in results]})
        else:
            render_dbt(results, "transform")

    run(ctx, work, as_json=as_json, step="transform", monitored=True)


def test_command(
    ctx: typer.Context,
    changed: Annotated[
        bool,
        typer.Option(
            "--changed",
            help="Check only the Gold rows written since the last passing test run; no verify.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the dbt data tests and source freshness, then (the full test) verify that bronze,
    silver, the fact and the mart agree per day; exit 3 when a test fails or a day differs."""

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            database_of(settings) as database,
            pipeline.single_step(settings, database, "test", observer_of(ctx, view)),
            database.connect(autocommit=True, purpose="test") as conn,
        ):
            with view:
                report = pipeline.check_gold(settings, database, conn, changed=changed, on_node=view.dbt_node)
            if not as_json:
                render_dbt(report.dbt, "test")
                if report.verified is not None:
                    render_verify(report.verified, as_json=False)
            report.raise_for_failures()  # with --json, the error object is the document
            if as_json:
                console.print_json(report.to_dict())

    run(ctx, work, as_json=as_json, step="test", monitored=True)


def verify_command(
    ctx: typer.Context,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            metavar="DAY",
            help="Only the days from this UTC day (YYYY-MM-DD).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Prove bronze, silver, the fact and the mart agree per day (sales, lines, amounts to the
    cent), and the source's count of sales where it reports one; exit 3 when they differ."""
    from retailctl import verify

    def work() -> None:
        settings = settings_of(ctx)
        with database_of(settings) as database, pipeline_lock(database, "verify"):
            result = verify.verify(database, settings, since.date() if since else None)
        render_verify(result, as_json=as_json)
        verify.raise_for_differences(result)  # with --json, the error object holds the result

    run(ctx, work, as_json=as_json, step="verify")


def run_all(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Extract, load, transform and test, under one lock; stop at the first failing step."""

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with source_settings(settings, quiet=as_json) as settings, database_of(settings) as database:
            try:
                result = pipeline.run_all(settings, database, observer=observer_of(ctx, view))
            except BaseException as exc:
                view.close(exc)
                raise
        counted = view.close()
        if as_json:
            console.print_json(
                {
                    "run_id": result.run_id,
                    "trigger": result.trigger,
                    "status": "success",
                    "started_at": result.started_at,
                    "seconds": result.seconds,
                    "steps": [dataclasses.asdict(step) for step in result.steps],
                    "tally": dataclasses.asdict(counted) if counted else None,
                }
            )

    run(ctx, work, as_json=as_json, monitored=True)
