"""How fast the bundled mock API serves a 1000-sale page (target: under 50 ms; issue 7: 20 ms).

python bench/bench_mock_api.py [--sales 1000000] [--requests 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import httpx

from mock_api import DEFAULT_API_KEY, BackgroundServer, DataConfig, MockConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sales", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()

    started = time.perf_counter()
    with BackgroundServer(MockConfig(data=DataConfig(sales=args.sales))) as server:
        startup = time.perf_counter() - started
        rng = random.Random(1)
        timings = []
        with httpx.Client(base_url=server.url, headers={"Authorization": DEFAULT_API_KEY}) as client:
            client.get("/sales", params={"limit": 1000})  # warm up
            for _ in range(args.requests):
                start_id = rng.randint(1, max(args.sales - 1000, 1))
                t0 = time.perf_counter()
                response = client.get("/sales", params={"start_sales_id": start_id, "limit": 1000})
                timings.append(time.perf_counter() - t0)
                assert len(response.json()["items"]) == 1000
    timings.sort()
    rows = [
        ("server start (in-process)", f"{startup * 1000:.1f} ms"),
        ("1000-sale page, median", f"{statistics.median(timings) * 1000:.1f} ms"),
        ("1000-sale page, p95", f"{timings[int(len(timings) * 0.95) - 1] * 1000:.1f} ms"),
        ("sales/s served (median page)", f"{1000 / statistics.median(timings):,.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"mock API benchmark: {args.sales:,} sales, {args.requests} pages of 1000 over loopback")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12}")


if __name__ == "__main__":
    main()
