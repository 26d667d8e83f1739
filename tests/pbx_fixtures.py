"""scim2-server as the PBX: one process per test session, one tenant per test."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

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
