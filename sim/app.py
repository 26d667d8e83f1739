"""The simulator as an aiohttp application: bearer-token checks, ``$batch``,
fault injection and a request log, around :class:`~sim.graph.GraphApi`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from sim.graph import GraphApi, SimRequest, SimResponse, SimSettings, graph_error
from sim.store import SimTenant
from sim.subscriptions import SubscriptionsApi

MAX_BATCH_REQUESTS = 20


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # below /v1.0, without the query
    status: int
    in_batch: bool = False
    at: float = 0.0  # the simulator clock's time when answered


@dataclass
class ScriptedFault:
    """Answer the next ``count`` matching requests with ``status``."""

    status: int
    count: int = 1
    path_pattern: str = ".*"
    retry_after: int | None = None
    code: str = "ServiceUnavailable"
    in_batch: bool | None = None  # None: top-level requests and batch items alike
    raw_body: bytes | None = None  # answer with these bytes as JSON instead (a malformed payload)
    inner_code: str | None = None  # the specific code, nested in innerError under ``code``
    # Quote the request's Authorization header and its bare token in the error's message, as a
    # gateway or a debugging endpoint may: issue 20 found the daemon storing such a message whole.
    echo_authorization: bool = False


@dataclass
class LinkFault:
    """Rewrite the paging links of matching answers, as a broken or hostile Graph
    (or whatever sits between it and the daemon) would; issue 20 found the daemon
    following all three: ``loop`` (the ``@odata.nextLink`` is the request's own
    URL, so every page names itself), ``endless`` (a fresh nextLink every time,
    and no items), ``foreign`` (the nextLink and deltaLink moved to
    ``foreign_base``, another origin, which must never see a request or a token)."""

    mode: str  # loop | endless | foreign
    path_pattern: str = ".*"
    foreign_base: str = ""
    served: int = 0  # answers rewritten so far


@dataclass
class Faults:
    latency: float = 0.0
    throttle_fraction: float = 0.0
    batch_item_throttle_fraction: float = 0.0
    retry_after: int = 2
    scripted: list[ScriptedFault] = field(default_factory=list)
    hang_pattern: str | None = None  # requests whose path matches never get an answer
    links: list[LinkFault] = field(default_factory=list)
    echoed: list[str] = field(default_factory=list)  # the Authorization headers an echo fault quoted


class Simulator:
    """One simulated tenant served over HTTP."""

    def __init__(
        self,
        tenant: SimTenant | None = None,
        settings: SimSettings | None = None,
        accepted_tokens: set[str] | None = None,
        seed: int = 1,
    ) -> None:
        self.tenant = tenant or SimTenant()
        self.api = GraphApi(self.tenant, settings)
        self.subscriptions = SubscriptionsApi(self.tenant)
        self.accepted_tokens = accepted_tokens
        self.faults = Faults()
        self.log: list[LoggedRequest] = []
        self._random = random.Random(seed)
        self._hang = asyncio.Event()
        self._mailbox_in_flight: dict[str, int] = {}
        self.max_mailbox_in_flight: dict[str, int] = {}

    def fail_next(self, status: int, count: int = 1, path_pattern: str = ".*", **kwargs: Any) -> None:
        self.faults.scripted.append(ScriptedFault(status, count, path_pattern, **kwargs))

    def requests(self, pattern: str = ".*", in_batch: bool | None = None) -> list[LoggedRequest]:
        """Logged requests whose path matches ``pattern``."""
        regex = re.compile(pattern)
        return [r for r in self.log if regex.search(r.path) and (in_batch is None or r.in_batch == in_batch)]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/v1.0/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        if self.faults.latency and path != "/$batch":  # a $batch waits inside, with its mailboxes counted
            await asyncio.sleep(self.faults.latency)
        if self.faults.hang_pattern and re.search(self.faults.hang_pattern, path):
            await self._hang.wait()  # never set: the request hangs until the client gives up
        response = self._check_auth(request)
        if response is None:
            response = self._fault(path, in_batch=False, authorization=request.headers.get("Authorization", ""))
        if response is None:
            if path == "/$batch" and request.method == "POST":
                response = await self._batch(request)
            elif path.startswith("/subscriptions"):
                response = await self.subscriptions.handle(request.method, path, await _json_body(request))
            else:
                sim_request = self._sim_request(request.method, path, dict(request.query), dict(request.headers), request)
                if request.method == "POST":
                    sim_request.body = await _json_body(request)
                response = self.api.dispatch(sim_request)
                response = self._rewrite_links(path, f"{request.scheme}://{request.host}{request.path_qs}", response)
        self._record(request.method, path, response.status, False)
        return _to_http(response)

    def _record(self, method: str, path: str, status: int, in_batch: bool) -> None:
        self.log.append(LoggedRequest(method, path, status, in_batch, self.tenant.clock.time()))

    def _check_auth(self, request: web.Request) -> SimResponse | None:
        if self.accepted_tokens is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        if token not in self.accepted_tokens:
            return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        return None

    def _fault(self, path: str, in_batch: bool, authorization: str = "") -> SimResponse | None:
        for fault in list(self.faults.scripted):
            if fault.in_batch not in (None, in_batch) or not re.search(fault.path_pattern, path):
                continue
            fault.count -= 1
            if fault.count <= 0:
                self.faults.scripted.remove(fault)
            if fault.raw_body is not None:
                return SimResponse(fault.status, fault.raw_body, {"Content-Type": "application/json"})
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            code = "TooManyRequests" if fault.status == 429 else fault.code
            message = f"Simulated {fault.status}."
            if fault.echo_authorization:
                self.faults.echoed.append(authorization)
                message += f" Request header Authorization: {authorization}; token {authorization.partition(' ')[2]}."
            return graph_error(fault.status, code, message, headers, inner_code=fault.inner_code)
        fraction = self.faults.batch_item_throttle_fraction if in_batch else self.faults.throttle_fraction
        if fraction and path != "/$batch" and self._random.random() < fraction:
            return graph_error(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(self.faults.retry_after)})
        return None

    def _rewrite_links(self, path: str, own_url: str, response: SimResponse) -> SimResponse:
        """Apply the first matching :class:`LinkFault` to a page of a paged answer."""
        body = response.body
        fault = next((f for f in self.faults.links if re.search(f.path_pattern, path)), None)
        if fault is None or not isinstance(body, dict) or "value" not in body:
            return response
        fault.served += 1
        page = {k: v for k, v in body.items() if k not in ("@odata.nextLink", "@odata.deltaLink")}
        if fault.mode == "loop":
            page["@odata.nextLink"] = own_url
        elif fault.mode == "endless":
            page["value"] = []
            base = re.sub(r"[?&]simpage=\d+$", "", own_url)
            page["@odata.nextLink"] = f"{base}{'&' if '?' in base else '?'}simpage={fault.served}"
        else:
            for key in ("@odata.nextLink", "@odata.deltaLink"):
                if isinstance(body.get(key), str):
                    parts = urlsplit(body[key])
                    page[key] = f"{fault.foreign_base}{parts.path}?{parts.query}"
        return SimResponse(response.status, page, response.headers)

    def _sim_request(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], request: web.Request) -> SimRequest:
        base = f"{request.scheme}://{request.host}"
        return SimRequest(method, path, query, {k.lower(): v for k, v in headers.items()}, base)

    async def _batch(self, request: web.Request) -> SimResponse:
        try:
            body = await request.json()
            items = body["requests"]
            assert isinstance(items, list)
        except (ValueError, KeyError, AssertionError, TypeError):
            return graph_error(400, "BadRequest", "Invalid batch payload.")
        if len(items) > MAX_BATCH_REQUESTS:
            return graph_error(400, "BadRequest", f"Maximum number of requests in a batch is {MAX_BATCH_REQUESTS}.")
        ids = [str(item.get("id")) for item in items if isinstance(item, dict)]
        if len(ids) != len(items) or len(set(ids)) != len(ids):
            return graph_error(400, "BadRequest", "Every batch request needs a unique id.")
        mailboxes = [_mailbox_of(str(item.get("url", ""))) for item in items]
        for mailbox in filter(None, mailboxes):
            self._enter_mailbox(mailbox)
        try:
            if self.faults.latency:
                await asyncio.sleep(self.faults.latency)
            return self._run_batch(items, request)
        finally:
            for mailbox in filter(None, mailboxes):
                self._mailbox_in_flight[mailbox] -= 1

    def _enter_mailbox(self, mailbox: str) -> None:
        count = self._mailbox_in_flight.get(mailbox, 0) + 1
        self._mailbox_in_flight[mailbox] = count
        self.max_mailbox_in_flight[mailbox] = max(count, self.max_mailbox_in_flight.get(mailbox, 0))

    def _run_batch(self, items: list[Any], request: web.Request) -> SimResponse:
        statuses: dict[str, int] = {}
        responses = []
        for item in items:
            response = self._batch_item(item, statuses, request)
            statuses[str(item["id"])] = response.status
            responses.append(_batch_response(str(item["id"]), response))
        self._random.shuffle(responses)  # Graph answers items in any order
        return SimResponse(200, {"responses": responses})

    def _batch_item(self, item: dict[str, Any], statuses: dict[str, int], request: web.Request) -> SimResponse:
        url = str(item.get("url", ""))
        method = str(item.get("method", "GET")).upper()
        parts = urlsplit(url if url.startswith("/") else "/" + url)
        path = parts.path
        for dependency in item.get("dependsOn", []) or []:
            if not 200 <= statuses.get(str(dependency), 0) < 300:
                self._record(method, path, 424, True)
                return graph_error(424, "FailedDependency", "A request this one depends on failed.")
        fault = self._fault(path, in_batch=True, authorization=request.headers.get("Authorization", ""))
        if fault is not None:
            response = fault
        else:
            headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
            headers.setdefault("authorization", request.headers.get("Authorization", ""))
            response = self.api.dispatch(self._sim_request(method, path, dict(parse_qsl(parts.query)), headers, request))
            own_url = f"{request.scheme}://{request.host}/v1.0{parts.path}" + (f"?{parts.query}" if parts.query else "")
            response = self._rewrite_links(path, own_url, response)
        self._record(method, path, response.status, True)
        return response


async def _json_body(request: web.Request) -> Any:
    """The request's JSON, or None when it has no body or the body is not JSON."""
    try:
        return await request.json() if request.can_read_body else None
    except ValueError:
        return None


def _mailbox_of(url: str) -> str | None:
    """The mailbox an Outlook request touches (contacts, calendar, settings, photo)."""
    match = re.match(r"/?users/([^/?]+)/(contactFolders|contacts|calendarView|events|mailboxSettings|photo)", url)
    return match.group(1) if match else None


def _batch_response(id_: str, response: SimResponse) -> dict[str, Any]:
    headers = dict(response.headers)
    body: Any = response.body
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode()  # binary bodies travel base64-encoded
    else:
        headers.setdefault("Content-Type", "application/json")
    return {"id": id_, "status": response.status, "headers": headers, "body": body}


def _to_http(response: SimResponse) -> web.Response:
    if isinstance(response.body, bytes):
        return web.Response(status=response.status, body=response.body, headers=response.headers)
    text = json.dumps(response.body if response.body is not None else {})
    return web.Response(status=response.status, text=text, content_type="application/json", headers=response.headers)

