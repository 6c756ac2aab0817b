"""`retailctl api serve`: the bundled mock retail API, with the faults a real source has."""

from __future__ import annotations

from typing import Annotated

import typer

from retailctl.cli import console


def api_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 4010,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 42,
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 500,
    products: Annotated[int, typer.Option(min=1, help="Number of products.")] = 200,
    sales: Annotated[int, typer.Option(min=0, help="Number of sales at start.")] = 10_000,
    live: Annotated[float, typer.Option(min=0, help="New sales per minute while serving.")] = 0.0,
    fail_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of requests answered 500/503.")] = 0.0,
    throttle_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests answered 429 with Retry-After.")
    ] = 0.0,
    latency_ms: Annotated[int, typer.Option(min=0, help="Delay added to every request.")] = 0,
    invalid_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of records served invalid.")] = 0.0,
    inconsistent_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of sales whose total differs from their lines.")
    ] = 0.0,
    gap_every: Annotated[
        int, typer.Option(min=0, help="Leave a gap of 3 ids after every N sales (0 = dense ids).")
    ] = 0,
    hidden_products: Annotated[
        int, typer.Option(min=0, help="The last N products are sold but not listed by /products.")
    ] = 0,
    customer_version: Annotated[int, typer.Option(min=0, help="Bump to change some customers' emails.")] = 0,
    corrections: Annotated[
        int,
        typer.Option(
            min=0,
            help="Published sales corrected per round: another customer, another day, a line "
            "removed or a quantity changed, in turn.",
        ),
    ] = 0,
    correction_version: Annotated[
        int, typer.Option(min=0, help="Correction rounds 0..V are applied: bump for one more round.")
    ] = 0,
    correction_window: Annotated[
        int | None,
        typer.Option(
            min=1, help="Correct only among the last N sales (unset: any sale).", show_default=False
        ),
    ] = None,
    delist_products: Annotated[
        int, typer.Option(min=0, help="This many products (a seeded choice) missing from /products.")
    ] = 0,
    delist_customers: Annotated[
        int, typer.Option(min=0, help="This many customers (a seeded choice) missing from /customers.")
    ] = 0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RETAIL_API_KEY",
            help="The key clients must send [default: the demo key].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the bundled mock retail API (docs at /docs).

    POST /_admin/corrections?count=K&window=N and POST /_admin/delist?products=N&customers=M
    (same key) change the source's past while it serves.
    """
    from mock_api import DEFAULT_API_KEY, DataConfig, FaultConfig, MockConfig
    from mock_api.server import serve

    config = MockConfig(
        data=DataConfig(
            seed=seed,
            customers=customers,
            products=products,
            sales=sales,
            live_rate_per_min=live,
            gap_every=gap_every,
            invalid_rate=invalid_rate,
            inconsistent_rate=inconsistent_rate,
            hidden_products=hidden_products,
            customer_version=customer_version,
            corrections=corrections,
            correction_version=correction_version,
            correction_window=correction_window,
            delisted_products=delist_products,
            delisted_customers=delist_customers,
        ),
        faults=FaultConfig(fail_rate=fail_rate, throttle_rate=throttle_rate, latency_ms=latency_ms),
        api_key=api_key or DEFAULT_API_KEY,
    )
    console.notice(f"mock retail API on http://{host}:{port} (docs at /docs)")
    serve(config, host=host, port=port)
