"""Dead-man's-switch pings, healthchecks.io style: `<url>/start`, then `<url>` or `<url>/<code>`.

A ping is best effort: a few short attempts within a small time budget, and a failure is
returned as a line to warn with, never raised. A monitoring outage must not fail, or hold up,
the pipeline it watches.
"""

from __future__ import annotations

import time

BUDGET_S = 4.0  # the most one ping may take, retries included
ATTEMPT_TIMEOUT_S = 2.0
ATTEMPTS = 3
BODY_LIMIT = 10_000  # healthchecks.io keeps the first 100 kB of a body; a line or two is enough


def ping(
    url: str,
    suffix: str = "",
    *,
    body: str = "",
    run_id: str | None = None,
    budget_s: float = BUDGET_S,
    attempts: int = ATTEMPTS,
) -> str | None:
    """POST `body` to `url` + `suffix`; None when the server took it, else why not (one line).

    Connection errors, timeouts and 5xx answers are retried while the budget lasts; `run_id`
    goes along as `rid`, so the service pairs each run's start with its end.
    """
    import httpx  # here, not at the top: `transform` and `test` have no use for it (see extract)

    target = url.rstrip("/") + suffix
    params = {"rid": run_id} if run_id else None
    deadline = time.monotonic() + budget_s
    problem = "no attempt made"
    tried = 0
    with httpx.Client(follow_redirects=True) as client:
        while tried < attempts:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            tried += 1
            try:
                response = client.post(
                    target,
                    params=params,
                    content=body[:BODY_LIMIT].encode(),
                    timeout=httpx.Timeout(min(ATTEMPT_TIMEOUT_S, remaining)),
                )
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.is_success:
                    return None
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    break  # a wrong URL stays wrong: no retry
            pause = min(0.25 * tried, deadline - time.monotonic())
            if tried < attempts and pause > 0:
                time.sleep(pause)
    return f"{problem} after {tried} attempt(s)"
