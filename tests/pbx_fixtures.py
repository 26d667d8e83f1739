"""scim2-server as the PBX: one process per test session, one tenant per test."""

from __future__ import annotations

import asyncio
import itertools
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from daemon.clock import FakeClock
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.retry import Transport
from sim.pbx import PbxRequest, ScimServer

_tenants = itertools.count(1)


# Event subjects the simulator and the tests use; none may ever reach the PBX.
EVENT_SUBJECTS = ("Private meeting", "Board meeting", "Confidential agenda")
_used_tenants: list[str] = []


@pytest.fixture(scope="session")
def scim_server() -> Iterator[ScimServer]:
    with ScimServer() as server:
        yield server
        leaked = []
        for tenant in _used_tenants:  # over the whole test session
            for endpoint in ("Users", "Contacts", "Groups"):
                request = urllib.request.Request(f"{server.url(tenant)}/{endpoint}?count=1000",
                                                 headers={"Authorization": f"Bearer {server.token}"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    text = response.read().decode()
                leaked += [f"{tenant}/{endpoint}: {s}" for s in EVENT_SUBJECTS if s in text]
        assert leaked == [], "event content reached the PBX"


@dataclass
class PbxEnv:
    server: ScimServer
    tenant: str
    client: PbxClient
    metrics: Metrics
    clock: FakeClock

    def requests(self) -> list[PbxRequest]:
        return self.server.requests(self.tenant)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[PbxRequest]:
        """The tenant's log once it holds ``count`` entries (the server logs just after answering)."""
        return self.server.wait_for_requests(self.tenant, count, timeout)


def make_client(server: ScimServer, tenant: str, session: aiohttp.ClientSession, metrics: Metrics, clock: FakeClock) -> PbxClient:
    return PbxClient(Transport(session, "t", metrics, clock=clock), server.url(tenant), server.token)


@pytest.fixture
async def pbx(scim_server: ScimServer) -> AsyncIterator[PbxEnv]:
    tenant = f"t{next(_tenants)}"
    _used_tenants.append(tenant)
    metrics, clock = Metrics(), FakeClock()
    async with aiohttp.ClientSession() as session:
        yield PbxEnv(scim_server, tenant, make_client(scim_server, tenant, session, metrics, clock), metrics, clock)


class LostAnswerProxy:
    """Forwards to scim2-server; for the chosen write, lets the PBX apply it and
    then loses the answer: a 502 from a gateway, a dropped connection, or no
    answer until the client times out (an event that is never set).

    The choice is made as a request arrives, and every request is forwarded to the end
    whatever its client does meanwhile: the test server cancels the handler of a client
    that gave up (a timeout on a loaded machine), which must neither spare the chosen
    request nor keep the PBX from applying a write, as a real PBX would."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.method: str | None = None  # POST, PATCH or DELETE (inside /Bulk too)
        self.endpoint = "/"  # only writes to this endpoint (/Users, /Groups, /Contacts)
        self.mode = "502"  # 502 | drop | timeout
        self.remaining = 0  # answers still to lose
        self.lost: list[str] = []
        self.forwarding: set[asyncio.Task[web.Response]] = set()
        self._never = asyncio.Event()

    def lose(self, method: str, mode: str, count: int = 1, endpoint: str = "/") -> None:
        self.method, self.mode, self.remaining, self.endpoint = method, mode, count, endpoint

    def _matches(self, request: web.Request, body: bytes) -> bool:
        if self.remaining <= 0 or self.method is None:
            return False
        if request.path.endswith("/Bulk"):
            text = body.decode()
            return f'"method": "{self.method}", "path": "{self.endpoint}' in text
        return request.method == self.method and self.endpoint in request.path

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        # Host passes through, as a reverse proxy before a PBX must: the PBX's /Bulk locations then
        # name the proxy, the only origin the client accepts them from.
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with aiohttp.ClientSession() as session:
            url = self.target + request.path_qs.split("/v2", 1)[1]
            async with session.request(request.method, url, data=body, headers=headers) as answer:
                payload = await answer.read()
                return web.Response(status=answer.status, body=payload,
                                    headers={k: v for k, v in answer.headers.items()
                                             if k.lower() in ("content-type", "etag", "location")})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        chosen = self._matches(request, body)
        if chosen:
            self.remaining -= 1
            self.lost.append(f"{request.method} {request.path} ({self.mode})")
        forwarding = asyncio.ensure_future(self._forward(request, body))
        self.forwarding.add(forwarding)
        forwarding.add_done_callback(self.forwarding.discard)
        response = await asyncio.shield(forwarding)  # applied even if this handler is cancelled
        if not chosen:
            return response
        if self.mode == "drop":
            assert request.transport is not None
            request.transport.abort()  # the connection goes away without an answer
            return response
        if self.mode == "timeout":
            await self._never.wait()  # the client gives up first
        return web.Response(status=502, text="Bad Gateway")


@pytest.fixture
async def lossy_proxy() -> AsyncIterator[Callable[[str], Awaitable[tuple[LostAnswerProxy, str]]]]:
    """Start a lost-answer proxy in front of a scim2-server tenant URL; returns (proxy, its URL)."""
    started: list[tuple[LostAnswerProxy, TestServer]] = []

    async def start(target: str) -> tuple[LostAnswerProxy, str]:
        proxy = LostAnswerProxy(target)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        started.append((proxy, server))
        return proxy, str(server.make_url("/v2"))

    yield start
    for proxy, server in started:
        await server.close()
        await asyncio.gather(*proxy.forwarding, return_exceptions=True)
