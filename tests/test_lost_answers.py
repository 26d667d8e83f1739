"""Lost answers: the PBX applies a write, then the daemon sees a 502, a dropped
connection or a timeout. For POST, PATCH and DELETE, one by one and inside
/Bulk (full-size requests, two in flight), on both state backends, the run
still converges: no duplicate, nothing missing, no failure, and the next run
writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

import scenario
from daemon.pbx.client import PbxClient
from graph_fixtures import GraphEnv
from pbx_fixtures import LostAnswerProxy, PbxEnv
from sim.pbx import ScimServer
from state.open import open_database
from state.store import Store
from state.sync_store import SyncStore
from sync_fixtures import SyncEnv, on_both_backends, tenant_config  # noqa: F401  (the fixture: every test here runs on both backends)

# A client that gives up on an answer the proxy holds back ("timeout"): soon, to keep the test short, yet not so
# soon that a loaded machine's PBX (or this process, the proxy) answering slowly loses other answers too.
GIVE_UP = aiohttp.ClientTimeout(total=10, sock_read=2)


@pytest.fixture(params=["bulk", "one-by-one"])
async def lossy_env(request: pytest.FixtureRequest, graph_env: GraphEnv, pbx: PbxEnv, tmp_path: Path,
                    scim_server_one_by_one: ScimServer,
                    lossy_proxy: Callable[[str], Awaitable[tuple[LostAnswerProxy, str]]], sync_backend: str,
                    ) -> AsyncIterator[tuple[SyncEnv, LostAnswerProxy]]:
    server = pbx.server if request.param == "bulk" else scim_server_one_by_one
    proxy, url = await lossy_proxy(server.url(pbx.tenant))
    client = pbx.client
    pbx.client = PbxClient(client.transport, url, server.token)  # the daemon's own timeouts, until ``lose``
    db = await open_database(request.getfixturevalue("pg_url") if sync_backend == "postgresql" else tmp_path / "state.db")
    store = Store(db, clock=graph_env.clock.time)
    await store.register_tenant("t", "d", "a")
    env = SyncEnv(graph_env, pbx, db, store, SyncStore(db, clock=graph_env.clock.time), tmp_path,
                  tenant_config(tmp_path, **scenario.config_sections()))
    try:
        yield env, proxy
    finally:
        await db.close()


def lose(env: SyncEnv, proxy: LostAnswerProxy, method: str, mode: str, count: int, endpoint: str) -> None:
    """The proxy loses the next ``count`` answers to ``method`` on ``endpoint``; for "timeout" the client gives up."""
    proxy.lose(method, mode, count=count, endpoint=endpoint)
    if mode == "timeout":
        env.pbx.client.timeout = GIVE_UP


async def check_pbx(env: SyncEnv, world: scenario.Scenario) -> None:
    """Exactly the expected objects, each once (the helpers fail on a duplicate)."""
    assert set(await env.pbx_users()) == world.expected_users()
    assert set(await env.pbx_contacts()) == world.expected_contacts()
    groups = await env.pbx_groups()
    assert set(groups) == set(world.expected_groups())


async def converges(env: SyncEnv, world: scenario.Scenario) -> None:
    report = await env.run()
    assert report.result == "success", (report.error, report.failures)
    assert report.failures == [] and report.groups.failures == [] and report.contacts.failures == []
    await check_pbx(env, world)
    writes = env.pbx_writes()
    again = await env.run()
    assert again.result == "success" and env.pbx_writes() == writes, (again.counts, again.groups.counts,
                                                                      again.contacts.counts)


# Contacts have no unique attribute on the PBX, so only a look-up prevents a
# duplicate: every way of losing an answer is tried on them; users and groups
# (whose names are unique) once each.
CASES = [("/Contacts", "502"), ("/Contacts", "drop"), ("/Contacts", "timeout"), ("/Users", "drop"), ("/Groups", "drop")]


@pytest.mark.parametrize(("endpoint", "mode"), CASES)
async def test_lost_answer_to_a_create(lossy_env: tuple[SyncEnv, LostAnswerProxy], endpoint: str, mode: str) -> None:
    env, proxy = lossy_env
    world = scenario.build(env.graph.tenant)
    lose(env, proxy, "POST", mode, count=2, endpoint=endpoint)
    await converges(env, world)
    assert proxy.lost  # at least one answer was lost (one /Bulk may carry them all)


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
@pytest.mark.parametrize(("endpoint", "mode"), CASES)
async def test_lost_answer_to_an_update_or_delete(lossy_env: tuple[SyncEnv, LostAnswerProxy], endpoint: str,
                                                  mode: str, method: str) -> None:
    env, proxy = lossy_env
    world = scenario.build(env.graph.tenant)
    await converges(env, world)
    scenario.working_day(world)
    lose(env, proxy, method, mode, count=1, endpoint=endpoint)
    await converges(env, world)
    assert len(proxy.lost) == 1, proxy.lost
