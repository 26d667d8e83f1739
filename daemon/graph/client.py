"""Requests to Microsoft Graph: bearer token, timeouts, polite retries, typed errors.

429 and 503 are retried after at least ``Retry-After`` (never sooner); other
5xx, timeouts and connection failures after an exponential backoff with full
jitter; all within a bounded number of attempts, then a typed
:class:`~daemon.errors.GraphError`. A 401 gets one retry with a freshly
acquired token before it becomes :class:`~daemon.errors.AuthorizationRequired`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from daemon.errors import (
    AccessDenied,
    AuthorizationRequired,
    DeltaExpired,
    GraphNotFound,
    GraphPayloadError,
    GraphRequestError,
    GraphThrottled,
    GraphUnavailable,
    M365SyncError,
)
from daemon.graph.clouds import graph_link
from daemon.logging import get_logger
from daemon.retry import RetryableFailure, Transport, header, retry_after_seconds

log = get_logger(__name__)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15, sock_read=60)
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
DELTA_EXPIRED_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
# Specific codes (often nested in innerError under a generic one) that mean "busy,
# try again" whatever the status says (https://learn.microsoft.com/en-us/graph/errors,
# https://learn.microsoft.com/en-us/graph/throttling).
RETRYABLE_CODES = frozenset({"activitylimitreached", "applicationthrottled", "mailboxconcurrency", "errorserverbusy"})
MAX_INNER_ERRORS = 8  # nesting followed; Graph uses two or three levels
ID_PARENTS = frozenset({"users", "groups", "contactFolders", "contacts", "events", "photos"})


class TokenProvider(Protocol):
    async def __call__(self, *, force_refresh: bool = False) -> str: ...


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


def error_codes(body: Any) -> list[str]:
    """The error's codes, outermost first, walking nested ``innerError`` objects
    (Graph's guidance: the innermost code is the most specific)."""
    codes: list[str] = []
    error = body.get("error") if isinstance(body, Mapping) else None
    for _ in range(MAX_INNER_ERRORS):
        if not isinstance(error, Mapping):
            break
        if isinstance(error.get("code"), str) and error["code"]:
            codes.append(error["code"])
        error = error.get("innerError", error.get("innererror"))
    return codes


def is_retryable(status: int, body: Any) -> bool:
    """A status worth retrying, or an answer whose specific code says the service is busy."""
    return status in RETRYABLE_STATUSES or any(c.lower() in RETRYABLE_CODES for c in error_codes(body))


def error_for(status: int, body: Any, *, url: str, retry_after: float | None = None) -> M365SyncError:
    """The typed error for a final non-2xx Graph answer, named by its most specific code."""
    codes = error_codes(body)
    code, message = (codes[-1] if codes else None), _graph_error_message(body)
    shown = code if len(codes) < 2 else f"{code} ({codes[0]})"
    # Our words and Graph's codes; its message (its own words, which may quote the request) is
    # the error's upstream: printed and logged, never stored (``M365SyncError.reason``).
    text = f"Graph {status} {shown or ''} for {endpoint_label(url)}".replace("  ", " ")
    said = message or "no message"
    if status == 410 or any(c.lower() in DELTA_EXPIRED_CODES for c in codes):
        return DeltaExpired(text, status=status, code=code, hint="the next run starts a full round", upstream=said)
    if status == 401:
        return AuthorizationRequired(text, hint="re-run m365sync authorize for this tenant", upstream=said)
    if status == 403:
        return AccessDenied(text, status=status, code=code, upstream=said,
                            hint="the app's permissions or the mailbox's sharing do not allow this")
    if status == 404:
        return GraphNotFound(text, status=status, code=code, upstream=said)
    if status == 429:
        wait = f"; Graph asked to wait {retry_after:.0f} s" if retry_after is not None else ""
        return GraphThrottled(text + wait, status=status, code=code, hint="the next run continues", upstream=said)
    if status >= 500:
        return GraphUnavailable(text, status=status, code=code, hint="Graph is unavailable; the next run retries",
                                upstream=said)
    return GraphRequestError(text, status=status, code=code, upstream=said)


def _graph_error_message(body: Any) -> str | None:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        message = body["error"].get("message")
        return str(message) if message is not None else None
    return None


class GraphClient:
    """One tenant's view of Graph over the process-wide aiohttp session."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        token_provider: TokenProvider,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self.token_provider = token_provider
        self.timeout = timeout

    def url(self, path_or_url: str) -> str:
        """An absolute URL: Graph's links are used as given (on this Graph origin only), paths go below ``/v1.0``."""
        if path_or_url.startswith(("https://", "http://")):
            return graph_link(path_or_url, self.base_url, "link")
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
        """Send with the retry policy; a 2xx answer, or a typed GraphError.

        A 401 is sent again once, at once, with a freshly acquired token."""
        url = self.url(path_or_url)
        endpoint = endpoint_label(url)
        refreshed = False

        async def attempt() -> GraphResponse:
            nonlocal refreshed
            while True:
                token = await self.token_provider(force_refresh=refreshed)
                try:
                    response = await self._send(method, url, endpoint, token, json_body, headers)
                except (TimeoutError, aiohttp.ClientError) as err:
                    raise RetryableFailure(f"{type(err).__name__}: {err}".rstrip(": ")) from err
                if response.status == 401 and not refreshed:
                    refreshed = True
                    continue
                if 200 <= response.status < 300:
                    return response
                retry_after = retry_after_seconds(response.headers)
                if is_retryable(response.status, response.body):
                    raise RetryableFailure(str(response.status), status=response.status, retry_after=retry_after,
                                           body=response.body)
                raise error_for(response.status, response.body, url=url, retry_after=retry_after)

        def on_retry(failure: RetryableFailure, wait: float) -> None:
            log.info("retrying Graph request", endpoint=endpoint, reason=failure.reason, wait_seconds=round(wait, 2))

        try:
            return await self.transport.retrying(attempt, on_retry)
        except RetryableFailure as failure:
            if failure.status is None:
                raise GraphUnavailable(
                    f"Graph unreachable for {endpoint} after {failure.attempts} attempts: {failure.reason}",
                    hint="check the network path to Graph; the next run retries",
                ) from failure
            raise error_for(failure.status, failure.body, url=url, retry_after=failure.retry_after) from failure

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
        started = self.transport.clock.monotonic()
        async with self.transport.session.request(
            method,
            url,
            json=json_body,
            headers=all_headers,
            ssl=self.transport.ssl,
            timeout=self.timeout,
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            status = response.status
            response_headers = dict(response.headers)
        self.transport.metrics.graph_request_duration.labels(self.transport.tenant, endpoint).observe(
            self.transport.clock.monotonic() - started
        )
        self.record(endpoint, status)
        return GraphResponse(status, response_headers, _decode(raw, response_headers, url))

    def record(self, endpoint: str, status: int) -> None:
        """Count one answer (also used for ``$batch`` items)."""
        metrics, tenant = self.transport.metrics, self.transport.tenant
        metrics.graph_requests.labels(tenant, endpoint, str(status)).inc()
        if status == 429:
            metrics.graph_throttled.labels(tenant).inc()


def _decode(raw: bytes, headers: Mapping[str, str], url: str) -> Any:
    content_type = header(headers, "content-type") or ""
    if not raw:
        return None
    if "json" not in content_type:
        return raw
    try:
        return json.loads(raw)
    except ValueError as err:
        raise GraphPayloadError(f"Graph sent invalid JSON for {endpoint_label(url)}: {err}") from err
    except RecursionError as err:  # e.g. 100k nested arrays: refuse, do not crash
        raise GraphPayloadError(f"Graph sent JSON nested too deeply to read for {endpoint_label(url)}") from err
