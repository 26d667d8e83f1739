"""The connection to one tenant's PBX: requests under the one retry policy,
discovery, look-ups with escaped filters, and the paginated inventory.

A request that is not idempotent (a create, a PATCH, a ``/Bulk``) is retried
only on 429, which the PBX refuses before applying; any other retryable
failure raises :class:`AnswerLost` for the writer to resolve by reading.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp

from daemon.errors import (
    PbxAuthFailed,
    PbxLinkRefused,
    PbxListingInconsistent,
    PbxProtocolError,
    PbxRequestFailed,
    PbxUnavailable,
)
from daemon.links import same_origin, shown_origin
from daemon.logging import get_logger
from daemon.pbx.filters import eq_filter
from daemon.pbx.schema import ENDPOINTS, SCIM_JSON, Kind
from daemon.pbx.types import Answer, PbxObject, ProviderConfig, pbx_object, scim_int
from daemon.retry import RetryableFailure, Transport, retry_after_seconds

log = get_logger(__name__)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10, sock_read=30)
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_PAGE_SIZE = 1000  # the inventory's page size: the PBX's filter.maxResults, up to this
WRITES_IN_FLIGHT = 2  # write requests sent before the first is answered, at most
BULK_OPERATIONS_PER_TIMEOUT = 500  # a /Bulk request gets one more timeout per this many operations waiting


class AnswerLost(Exception):
    """A write that is not idempotent may have reached the PBX, but its answer
    never arrived (timeout, dropped connection, gateway error): the caller
    resolves it by reading before any new attempt."""

    def __init__(self, failure: RetryableFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def encoded_body(body: Any) -> bytes:
    """A request's body as sent (``/Bulk`` sizes its requests by this very encoding)."""
    return json.dumps(body, ensure_ascii=False).encode()


def pbx_link(url: str, base_url: str, what: str) -> str:
    """``url`` when it is on ``pbx.scim_url``'s scheme, host and port; else
    :class:`PbxLinkRefused`, before any request (the SCIM token never leaves)."""
    if not same_origin(url, base_url):
        raise PbxLinkRefused(
            f"the PBX named a {what} at {shown_origin(url)}, not at {shown_origin(base_url)}; it was not used",
            hint="set pbx.scim_url to the address the PBX calls itself, or have its proxy pass the Host header",
        )
    return url


class PbxConnection:
    """One tenant's PBX, over the process-wide aiohttp session."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        token: str,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.config: ProviderConfig | None = None
        # A shared state: raises LeaseLost once this daemon lost the tenant, asked of the lease
        # session right before each write request (the one place writes are checked).
        self.may_write: Callable[[], Awaitable[None]] | None = None
        # Write requests in flight at once, whoever sends them (the applier's chunks, the requests
        # of one chunk): the next is sent while the PBX works on one, and no more pile up.
        self.write_slots = asyncio.Semaphore(WRITES_IN_FLIGHT)

    # --- transport ---

    async def _request(
        self,
        op: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Answer:
        """Send with the retry policy; any answer that is not retryable is returned.

        A request that is not idempotent is retried only on 429 (refused before
        it was applied); any other retryable failure raises :class:`AnswerLost`."""
        if method == "GET":
            return await self._send(op, method, path, body, params, headers, idempotent, timeout)
        async with self.write_slots:
            if self.may_write is not None:  # in its slot, right before it is sent
                await self.may_write()
            return await self._send(op, method, path, body, params, headers, idempotent, timeout)

    async def _send(self, op: str, method: str, path: str, body: Any, params: Mapping[str, str] | None,
                    headers: Mapping[str, str] | None, idempotent: bool,
                    timeout: aiohttp.ClientTimeout | None) -> Answer:
        async def attempt() -> Answer:
            try:
                return await self._send_once(op, method, path, body, params, headers, timeout or self.timeout)
            except RetryableFailure as failure:
                if not idempotent and failure.lost:
                    raise AnswerLost(failure) from failure
                raise

        def on_retry(failure: RetryableFailure, wait: float) -> None:
            log.info("retrying PBX request", op=op, reason=failure.reason, wait_seconds=round(wait, 2))

        try:
            return await self.transport.retrying(attempt, on_retry)
        except RetryableFailure as failure:
            raise self._unavailable(op, failure) from failure

    async def _send_once(self, op: str, method: str, path: str, body: Any, params: Mapping[str, str] | None,
                         headers: Mapping[str, str] | None, timeout: aiohttp.ClientTimeout) -> Answer:
        url = pbx_link(path, self.base_url, "URL") if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        all_headers = {"Authorization": f"Bearer {self._token}", "Accept": SCIM_JSON, **(headers or {})}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else encoded_body(body)  # bytes: encoded by the caller
            all_headers["Content-Type"] = SCIM_JSON
        transport = self.transport
        metrics, tenant = transport.metrics, transport.tenant
        started = transport.clock.monotonic()
        try:
            async with transport.session.request(method, url, data=data, params=params, headers=all_headers,
                                                 ssl=transport.ssl, timeout=timeout,
                                                 allow_redirects=False) as response:
                raw = await response.read()
                answer = Answer(response.status, dict(response.headers), _json_or_none(raw))
        except (TimeoutError, aiohttp.ClientError) as err:
            metrics.pbx_requests.labels(tenant, op, "error").inc()
            raise RetryableFailure(f"{type(err).__name__}: {err}".rstrip(": ")) from err
        metrics.pbx_requests.labels(tenant, op, str(answer.status)).inc()
        metrics.pbx_request_duration.labels(tenant, op).observe(transport.clock.monotonic() - started)
        if answer.status in (401, 403):
            raise PbxAuthFailed(
                f"PBX refused the SCIM token ({answer.code})",
                status=answer.status,
                detail=answer.detail,
                hint="check the token in pbx.token_file",
            )
        if answer.status in RETRYABLE_STATUSES:
            raise RetryableFailure(answer.code, status=answer.status,
                                   retry_after=retry_after_seconds(answer.headers), lost=answer.status != 429,
                                   detail=answer.detail)
        return answer

    def bulk_timeout(self, operations: int) -> aiohttp.ClientTimeout:
        """The timeout of a ``/Bulk`` request of ``operations``: the PBX works through each, and
        the request may wait behind the one sent before it, so a full request of 1,000 may take
        several single requests' time before its answer counts as lost (then resolved by reading)."""
        factor = 1 + operations * WRITES_IN_FLIGHT / BULK_OPERATIONS_PER_TIMEOUT
        base = self.timeout
        return aiohttp.ClientTimeout(total=base.total and base.total * factor, connect=base.connect,
                                     sock_connect=base.sock_connect, sock_read=base.sock_read and base.sock_read * factor)

    def _unavailable(self, op: str, failure: RetryableFailure) -> PbxUnavailable:
        if failure.status is None:
            return PbxUnavailable(
                f"PBX unreachable at {self.base_url} after {failure.attempts} attempts: {failure.reason}",
                hint="check pbx.scim_url and that the PBX is up; the next run retries",
            )
        return PbxUnavailable(
            f"PBX answered {failure.reason} to {op} after {failure.attempts} attempts",
            status=failure.status, detail=failure.detail, hint="the next run retries",
        )

    # --- reads ---

    async def discover(self) -> ProviderConfig:
        """Read ``/ServiceProviderConfig`` once per client (one client per run)."""
        if self.config is None:
            answer = await self._request("discover", "GET", "/ServiceProviderConfig")
            body = answer.body if answer.status == 200 and isinstance(answer.body, Mapping) else {}
            self.config = ProviderConfig.from_json(body)
        return self.config

    async def get(self, kind: Kind, pbx_id: str) -> PbxObject | None:
        answer = await self._request("get", "GET", f"{ENDPOINTS[kind]}/{pbx_id}")
        if answer.status == 404:
            return None
        if answer.status != 200 or not isinstance(answer.body, Mapping):
            raise PbxRequestFailed(f"cannot read {kind} {pbx_id} ({answer.code})", status=answer.status, detail=answer.detail)
        return pbx_object(kind, answer.body, answer.etag)

    async def find(self, kind: Kind, attribute: str, value: str) -> list[PbxObject]:
        """Objects whose ``attribute`` equals ``value`` exactly (value escaped)."""
        answer = await self._request(
            "find", "GET", ENDPOINTS[kind], params={"filter": eq_filter(attribute, value), "count": "10"}
        )
        if answer.status != 200 or not isinstance(answer.body, Mapping):
            raise PbxRequestFailed(f"cannot search {kind} ({answer.code})", status=answer.status, detail=answer.detail)
        return [pbx_object(kind, item, None) for item in answer.body.get("Resources") or [] if isinstance(item, Mapping)]

    async def find_by_external_id(self, kind: Kind, external_id: str) -> PbxObject | None:
        found = await self.find(kind, "externalId", external_id)
        return found[0] if found else None

    async def iter_objects(self, kind: Kind, attributes: Sequence[str] = ()) -> AsyncIterator[PbxObject]:
        """Every object of a kind, page by page (the existing-extension inventory).

        Each page is checked before it is used: a page served again, an id seen
        before, a ``totalResults`` that moves, or a list that ends short of it
        raises :class:`PbxListingInconsistent`; it is never taken as complete."""
        config = await self.discover()
        count = max(1, min(MAX_PAGE_SIZE, config.filter_max_results))  # as large as the PBX allows
        start, total, seen = 1, None, set[str]()
        while True:
            params = {"startIndex": str(start), "count": str(count)}
            if attributes:
                params["attributes"] = ",".join(["externalId", *attributes])
            answer = await self._request("list", "GET", ENDPOINTS[kind], params=params)
            if answer.status != 200 or not isinstance(answer.body, Mapping):
                raise PbxRequestFailed(f"cannot list {kind} ({answer.code})", status=answer.status, detail=answer.detail)
            page = _page(kind, answer.body, start, total, seen)
            total = scim_int(answer.body.get("totalResults"), f"totalResults of the {kind} list")
            for obj in page:
                yield obj
            start += len(page)
            if start > total:
                return
            if not page:
                raise PbxListingInconsistent(
                    f"the PBX's {kind} list ended after {len(seen)} of the {total} objects it announced",
                    hint="the inventory was not used; the next run reads it again")


def _page(kind: Kind, body: Mapping[str, Any], start: int, total: int | None, seen: set[str]) -> list[PbxObject]:
    """One page's objects, after checking it against the pages before it (``seen`` is updated)."""
    def inconsistent(what: str) -> PbxListingInconsistent:
        return PbxListingInconsistent(f"the PBX's {kind} list is inconsistent: {what}",
                                      hint="the inventory was not used; the next run reads it again")

    served_from = body.get("startIndex")
    if served_from is not None and scim_int(served_from, f"startIndex of the {kind} list") != start:
        raise inconsistent(f"the page asked from {start} came back from {served_from}")
    this_total = scim_int(body.get("totalResults"), f"totalResults of the {kind} list")
    if total is not None and this_total != total:
        raise inconsistent(f"totalResults went from {total} to {this_total} between pages")
    page = [pbx_object(kind, r, None) for r in body.get("Resources") or [] if isinstance(r, Mapping)]
    for obj in page:
        if obj.id in seen:
            raise inconsistent(f"id {obj.id[:40]!r} was served twice")
        seen.add(obj.id)
    if len(seen) > this_total:
        raise inconsistent(f"{len(seen)} objects served, but totalResults is {this_total}")
    return page


def _json_or_none(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]
    except RecursionError as err:  # e.g. 100k nested arrays
        raise PbxProtocolError("the PBX answered with JSON nested too deeply to read",
                               hint="check pbx.scim_url points at the PBX's SCIM API") from err
