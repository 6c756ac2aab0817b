"""The HTTP client of the source API: auth, retries with backoff, the contract's page shape."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from retailctl.errors import ContractViolation, CredentialsRejected, SourceUnavailable

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0
ORIGINAL_MAX_LIMIT = 250


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total_items: int | None


def make_client(api_url: str, api_key: str, timeout_s: float) -> httpx.Client:
    """One keep-alive client; the raw `Authorization: <key>` header works with both APIs."""
    return httpx.Client(base_url=api_url, headers={"Authorization": api_key},
                        timeout=httpx.Timeout(timeout_s), follow_redirects=False)


class SourceClient:
    """GET pages of the source API, retrying what a retry can fix and nothing else."""

    def __init__(self, client: httpx.Client, *, attempts: int = 6,
                 sleep: Callable[[float], None] = time.sleep,
                 warn: Callable[[str], None] = lambda message: None) -> None:
        self.client = client
        self.attempts = attempts
        self.sleep = sleep
        self.warn = warn
        self.retries = 0  # retried requests, for the run summary
        self._limit_cap: int | None = None

    def page(self, path: str, params: Mapping[str, int]) -> Page:
        """One page; a `limit` above what the API accepted before is lowered to that."""
        params = dict(params)
        if "limit" in params:
            params["limit"] = self.effective_limit(params["limit"])
        response = self._get(path, params)
        if response.status_code == 422 and params.get("limit", 0) > ORIGINAL_MAX_LIMIT:
            self.warn(f"GET {path} refused limit={params['limit']}; "
                      f"using the original API's maximum of {ORIGINAL_MAX_LIMIT}")
            self._limit_cap = ORIGINAL_MAX_LIMIT
            return self.page(path, params)
        if response.status_code != 200:  # retrying cannot fix it: a failed step, not an outage
            url = response.request.url.copy_with(username=None, password=None)
            raise ContractViolation(f"GET {url} answered HTTP {response.status_code}: "
                                    f"{_excerpt(response.content)}")
        return parse_page(path, response.content)

    def effective_limit(self, wanted: int) -> int:
        """The page size to ask for: `wanted`, or less once the API refused it."""
        return min(wanted, self._limit_cap) if self._limit_cap else wanted

    def _get(self, path: str, params: Mapping[str, int]) -> httpx.Response:
        last_problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.get(path, params=params)
            except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
                last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                delay = _backoff(attempt)
            else:
                if response.status_code in (401, 403):
                    raise CredentialsRejected(
                        f"API key rejected: GET {path} answered HTTP {response.status_code}; "
                        "check RETAIL_API_KEY")
                if response.status_code not in RETRY_STATUSES:
                    return response
                last_problem = f"HTTP {response.status_code}"
                delay = _retry_after(response) if response.status_code == 429 else None
                delay = _backoff(attempt) if delay is None else delay
            if attempt < self.attempts:
                self.retries += 1
                self.sleep(delay)
        raise SourceUnavailable(
            f"GET {path} failed after {self.attempts} attempts (last: {last_problem})")


def parse_page(path: str, body: bytes) -> Page:
    """The contract's page: a JSON object with an `items` list (and usually `total_items`)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ContractViolation(
            f"GET {path} answered 200 with a body that is not JSON: {_excerpt(body)}") from None
    if not isinstance(document, dict) or "items" not in document:
        raise ContractViolation(f"GET {path} answered 200 without an `items` field: {_excerpt(body)}")
    items = document["items"]
    if not isinstance(items, list):
        raise ContractViolation(f"GET {path} answered 200 with `items` that is not a list")
    total = document.get("total_items")
    return Page(items=items, total_items=total if isinstance(total, int) else None)


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _excerpt(body: bytes, limit: int = 80) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
    return repr(text + ("…" if len(body) > limit else ""))
