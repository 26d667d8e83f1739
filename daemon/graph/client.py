"""Requests to Microsoft Graph: bearer token, timeouts, polite retries, typed errors.

429 and 503 are retried after at least ``Retry-After`` (never sooner); other
5xx, timeouts and connection failures after an exponential backoff with full
jitter; all within a bounded number of attempts, then a typed
:class:`~daemon.errors.GraphError`. A 401 gets one retry with a freshly
acquired token before it becomes :class:`~daemon.errors.AuthorizationRequired`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from daemon.errors import (
    AccessDenied,
    AuthorizationRequired,
    DeltaExpired,
    GraphError,
    GraphNotFound,
    GraphPayloadError,
    GraphRequestError,
    GraphThrottled,
    GraphUnavailable,
    M365SyncError,
)
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.clock import SystemClock

log = get_logger(__name__)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15, sock_read=60)
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
DELTA_EXPIRED_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
ID_PARENTS = frozenset({"users", "groups", "contactFolders", "contacts", "events", "photos"})


class TokenProvider(Protocol):
    async def __call__(self, *, force_refresh: bool = False) -> str: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    longest_retry_after: float = 600.0  # a longer Retry-After ends the request instead

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff for ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class GraphResponse:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or bytes for binary content


def endpoint_label(url_path: str) -> str:
    """A low-cardinality name for a Graph path: ids become ``{id}``."""
    path = re.sub(r"^.*?/v1\.0", "", url_path.split("?", 1)[0]) or "/"
    parts = path.strip("/").split("/")
    out = []
    for index, part in enumerate(parts):
        previous = parts[index - 1] if index else ""
        out.append("{id}" if previous in ID_PARENTS and part not in ("delta", "$value") else part)
    return "/" + "/".join(out)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for(status: int, body: Any, *, url: str, retry_after: float | None = None) -> M365SyncError:
    """The typed error for a final non-2xx Graph answer."""
    code, message = _graph_error_fields(body)
    text = f"Graph {status} {code or ''} for {endpoint_label(url)}: {message or 'no message'}".replace("  ", " ")
    if status == 410 or (code or "").lower() in DELTA_EXPIRED_CODES:
        return DeltaExpired(text, status=status, code=code, hint="the next run starts a full round")
    if status == 401:
        return AuthorizationRequired(text, hint="re-run m365sync authorize for this tenant")
    if status == 403:
        return AccessDenied(text, status=status, code=code, hint="the app's permissions or the mailbox's sharing do not allow this")
    if status == 404:
        return GraphNotFound(text, status=status, code=code)
    if status == 429:
        wait = f"; Graph asked to wait {retry_after:.0f} s" if retry_after is not None else ""
        return GraphThrottled(text + wait, status=status, code=code, hint="the next run continues")
    if status >= 500:
        return GraphUnavailable(text, status=status, code=code, hint="Graph is unavailable; the next run retries")
    return GraphRequestError(text, status=status, code=code)


def _graph_error_fields(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        code = error.get("code")
        message = error.get("message")
        return (str(code) if code is not None else None, str(message) if message is not None else None)
    return None, None


class GraphClient:
    """One tenant's view of Graph over the process-wide aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token_provider: TokenProvider,
        *,
        tenant: str,
        metrics: Metrics,
        ssl_context: ssl.SSLContext | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token_provider = token_provider
        self.tenant = tenant
        self.metrics = metrics
        self.ssl_context = ssl_context
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.rng = rng or random.Random()

    def url(self, path_or_url: str) -> str:
        """An absolute URL: Graph's links are used as given, paths go below ``/v1.0``."""
        if path_or_url.startswith(("https://", "http://")):
            return path_or_url
        return f"{self.base_url}/v1.0{path_or_url}"

    async def get(self, path_or_url: str, headers: Mapping[str, str] | None = None) -> GraphResponse:
        return await self.request("GET", path_or_url, headers=headers)

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> GraphResponse:
        """Send with retries; a 2xx answer, or a typed GraphError."""
        url = self.url(path_or_url)
        endpoint = endpoint_label(url)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            token = await self.token_provider(force_refresh=refreshed)
            try:
                response = await self._send(method, url, endpoint, token, json_body, headers)
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                if attempt >= self.retry.max_attempts:
                    raise GraphUnavailable(
                        f"Graph unreachable for {endpoint} after {attempt} attempts: {type(err).__name__}: {err}",
                        hint="check the network path to Graph; the next run retries",
                    ) from err
                await self._wait(self.retry.backoff(attempt, self.rng), endpoint, reason=type(err).__name__)
                continue
            if 200 <= response.status < 300:
                return response
            if response.status == 401 and not refreshed:
                refreshed = True  # one retry with a freshly acquired token
                attempt -= 1
                continue
            retry_after = retry_after_seconds(response.headers)
            if response.status in RETRYABLE_STATUSES and attempt < self.retry.max_attempts:
                delay = self._delay(response.status, retry_after, attempt)
                if delay is not None:
                    await self._wait(delay, endpoint, reason=str(response.status))
                    continue
            raise error_for(response.status, response.body, url=url, retry_after=retry_after)

    def _delay(self, status: int, retry_after: float | None, attempt: int) -> float | None:
        """How long to wait before the next attempt; None to give up now."""
        if retry_after is not None:
            if retry_after > self.retry.longest_retry_after:
                return None
            return retry_after  # never less than the server asked
        return self.retry.backoff(attempt, self.rng)

    async def _wait(self, seconds: float, endpoint: str, reason: str) -> None:
        log.info("retrying Graph request", endpoint=endpoint, reason=reason, wait_seconds=round(seconds, 2))
        await self.clock.sleep(seconds)

    async def _send(
        self,
        method: str,
        url: str,
        endpoint: str,
        token: str,
        json_body: Any,
        headers: Mapping[str, str] | None,
    ) -> GraphResponse:
        all_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})}
        started = self.clock.monotonic()
        async with self.session.request(
            method,
            url,
            json=json_body,
            headers=all_headers,
            ssl=self.ssl_context if self.ssl_context is not None else True,
            timeout=self.timeout,
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            status = response.status
            response_headers = dict(response.headers)
        self.metrics.graph_request_duration.labels(self.tenant, endpoint).observe(self.clock.monotonic() - started)
        self.record(endpoint, status)
        return GraphResponse(status, response_headers, _decode(raw, response_headers, url))

    def record(self, endpoint: str, status: int) -> None:
        """Count one answer (also used for ``$batch`` items)."""
        self.metrics.graph_requests.labels(self.tenant, endpoint, str(status)).inc()
        if status == 429:
            self.metrics.graph_throttled.labels(self.tenant).inc()


def _decode(raw: bytes, headers: Mapping[str, str], url: str) -> Any:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if not raw:
        return None
    if "json" not in content_type:
        return raw
    try:
        return json.loads(raw)
    except ValueError as err:
        raise GraphPayloadError(f"Graph sent invalid JSON for {endpoint_label(url)}: {err}") from err
