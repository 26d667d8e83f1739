"""The Graph simulator served on loopback, and a GraphClient pointed at it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from daemon.clock import FakeClock
from daemon.graph.client import GraphClient
from daemon.metrics import Metrics
from daemon.retry import RetryPolicy, Transport
from sim.app import Simulator
from sim.graph import SimSettings
from sim.store import SimTenant

TOKEN = "sim-access-token"


class StaticTokens:
    """A token provider that hands out ``tokens`` in turn on each refresh."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens) or [TOKEN]
        self.index = 0
        self.refreshes = 0

    async def __call__(self, *, force_refresh: bool = False) -> str:
        if force_refresh:
            self.refreshes += 1
            self.index = min(self.index + 1, len(self.tokens) - 1)
        return self.tokens[self.index]


@dataclass
class GraphEnv:
    sim: Simulator
    tenant: SimTenant
    client: GraphClient
    clock: FakeClock
    metrics: Metrics
    tokens: StaticTokens
    base_url: str


@pytest.fixture
async def graph_env() -> AsyncIterator[GraphEnv]:
    clock = FakeClock()
    tenant = SimTenant(clock)
    sim = Simulator(tenant, SimSettings(), accepted_tokens={TOKEN})
    server = TestServer(sim.app(), host="127.0.0.1")
    await server.start_server()
    metrics = Metrics()
    tokens = StaticTokens()
    base_url = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        transport = Transport(session, "t", metrics, clock=clock, retry=RetryPolicy(max_attempts=4), rng=random.Random(7))
        client = GraphClient(transport, base_url, tokens)
        yield GraphEnv(sim, tenant, client, clock, metrics, tokens, base_url)
    await server.close()
