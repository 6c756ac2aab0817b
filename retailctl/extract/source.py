"""The HTTP client of the source API: auth, retries with backoff, bounded bodies, the page shape."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from retailctl import stopping
from retailctl.errors import ContractViolation, CredentialsRejected, SourceUnavailable
from retailctl.extract.body import ACCEPT_ENCODING, BodyTooLarge, UnreadableBody, read_body
from retailctl.extract.deadline import DeadlineTransport

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0
ORIGINAL_MAX_LIMIT = 250
MIB = 1 << 20


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total_items: int | None


class BadBody(Exception):
    """A 200 whose body is too large or cannot be parsed: retried, then a ContractViolation."""


def make_client(api_url: str, api_key: str, timeout_s: float) -> httpx.Client:
    """One keep-alive client; the raw `Authorization: <key>` header works with both APIs.

    Each request has `timeout_s` in all (connect, send, every read), not per read.
    """
    return httpx.Client(
        base_url=api_url,
        headers={"Authorization": api_key, "Accept-Encoding": ACCEPT_ENCODING},
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        transport=DeadlineTransport(timeout_s, tls=httpx.URL(api_url).scheme == "https"),
    )


class SourceClient:
    """GET pages of the source API, retrying what a retry can fix and nothing else.

    A body is read as a stream and decoded a megabyte at a time, never past
    `max_response_bytes`: a compressed bomb costs that much memory, not what it expands to.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        attempts: int = 6,
        max_response_bytes: int = 64 * MIB,
        sleep: Callable[[float], None] = time.sleep,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.client = client
        self.attempts = attempts
        self.max_response_bytes = max_response_bytes
        self.sleep = sleep
        self.warn = warn
        self.retries = 0  # retried requests, for the run summary
        self._limit_cap: int | None = None
        self._lock = threading.Lock()  # pages may be requested from several threads at once
        self.base_url = shown_url(client.base_url)

    def page(self, path: str, params: Mapping[str, int]) -> Page:
        """One page; a `limit` above what the API accepted before is lowered to that.

        Connection failures, timeouts, 429 and 5xx, and a 200 whose body is too large or not
        JSON are retried with backoff; after the last attempt a bad body is a
        ContractViolation (exit 1), the rest SourceUnavailable (exit 69).
        """
        stopping.raise_if_stopped()
        params = dict(params)
        last_problem, bad_body = "", False
        for attempt in range(1, self.attempts + 1):
            if "limit" in params:
                params["limit"] = self.effective_limit(params["limit"])
            delay = _backoff(attempt)
            try:
                status, headers, body, url = self._get(path, params)
            except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
                last_problem, bad_body = _describe(exc), False
            except BadBody as exc:
                last_problem, bad_body = str(exc), True
            else:
                if status in (401, 403):
                    raise CredentialsRejected(
                        f"API key rejected: GET {path} answered HTTP {status}; check RETAIL_API_KEY"
                    )
                if status == 422 and params.get("limit", 0) > ORIGINAL_MAX_LIMIT:
                    with self._lock:  # pages requested together may all learn it: told once
                        learnt, self._limit_cap = self._limit_cap is None, ORIGINAL_MAX_LIMIT
                    if learnt:
                        self.warn(
                            f"GET {path} refused limit={params['limit']}; "
                            f"using the original API's maximum of {ORIGINAL_MAX_LIMIT}"
                        )
                    return self.page(path, params)
                if status == 200:
                    try:
                        return parse_page(path, body)
                    except BadBody as exc:
                        last_problem, bad_body = str(exc), True
                elif status in RETRY_STATUSES:
                    last_problem, bad_body = f"HTTP {status}", False
                    after = _retry_after(headers.get("retry-after")) if status == 429 else None
                    delay = delay if after is None else after
                else:  # retrying cannot fix it: a failed step, not an outage
                    raise ContractViolation(f"GET {url} answered HTTP {status}: {_excerpt(body)}")
            if attempt < self.attempts:
                with self._lock:
                    self.retries += 1
                self.sleep(delay)
        if bad_body:
            raise ContractViolation(f"{last_problem} (tried {self.attempts} times)")
        raise SourceUnavailable(
            f"GET {self.base_url}{path} failed after {self.attempts} attempts (last: {last_problem})"
        )

    def effective_limit(self, wanted: int) -> int:
        """The page size to ask for: `wanted`, or less once the API refused it."""
        return min(wanted, self._limit_cap) if self._limit_cap else wanted

    def _get(self, path: str, params: Mapping[str, int]) -> tuple[int, httpx.Headers, bytearray, httpx.URL]:
        """One GET: status, headers, the decoded body (read up to the size limit), the URL."""
        with self.client.stream("GET", path, params=params) as response:
            try:
                body = read_body(response, self.max_response_bytes)
            except BodyTooLarge:
                raise BadBody(
                    f"GET {path} answered a body larger than "
                    f"{self.max_response_bytes // MIB} MB decoded "
                    "(RETAIL_MAX_RESPONSE_MB)"
                ) from None
            except UnreadableBody as exc:
                raise BadBody(f"GET {path} answered {exc}") from None
            url = response.request.url.copy_with(username=None, password=None)
            return response.status_code, response.headers, body, url


def shown_url(url: httpx.URL) -> str:
    """The API's base URL as errors show it: without credentials (the key is a header anyway)."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}".rstrip("/")


def parse_page(path: str, body: bytes | bytearray) -> Page:
    """The contract's page: a JSON object with an `items` list (and usually `total_items`).

    A body that is not JSON (a proxy's error page, a NaN, a lone surrogate, nesting deeper than
    the parser allows) raises BadBody; a JSON body of another shape, ContractViolation.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(
            f"GET {path} answered 200 with a body that is not JSON (line {exc.lineno} "
            f"column {exc.colno}: {exc.msg}): {_excerpt(body)}"
        ) from None
    if not isinstance(document, dict) or "items" not in document:
        raise ContractViolation(f"GET {path} answered 200 without an `items` field: {_excerpt(body)}")
    items = document["items"]
    if not isinstance(items, list):
        raise ContractViolation(f"GET {path} answered 200 with `items` that is not a list")
    total = document.get("total_items")
    return Page(items=items, total_items=total if isinstance(total, int) else None)


def _describe(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


def _retry_after(value: str | None) -> float | None:
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


def _excerpt(body: bytes | bytearray, limit: int = 80) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
    return repr(text + ("…" if len(body) > limit else ""))
