"""The same sync against two SCIM 2.0 servers we did not write: scim2-server
(Python) and SCIMMY (Node, ``sim/scimmy``). Initial run, a run with no change,
a working day's changes (hires, renames, a disabled user, leavers, group and
contact changes), deprovisioning: both PBXs end in the same state, and no
write reaches either twice (counted by a proxy before each, /Bulk operations
one by one).

SCIMMY differs where RFC 7644 lets it: its /Bulk PATCH and DELETE results
carry no ``bulkId``, it refuses a ``data:`` URI as a photo (RFC 7643 wants a
URL), and it announces no ETags."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import scenario
from daemon.clock import FakeClock
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import PBX_GROUP, PBX_USER
from daemon.retry import Transport
from graph_fixtures import GraphEnv
from pbx_fixtures import PbxEnv
from scim_proxy import RewritingProxy, rewriting_proxy
from sim.pbx import ScimServer
from sim.scimmy_pbx import ScimmyServer
from sync_fixtures import SyncEnv, sqlite_sync_env

PHOTO = b"\xff\xd8\xffJPEGDATA\xff\xd9"


@pytest.fixture(scope="module")
def scimmy_server() -> Iterator[ScimmyServer]:
    with ScimmyServer() as server:
        yield server


async def snapshot(client: PbxClient) -> dict[str, Any]:
    """A PBX's objects by externalId, as far as the contract defines them (ids replaced by externalIds)."""
    users = {o.external_id: o.data async for o in client.iter_objects("User")}
    by_id = {data["id"]: external for external, data in users.items()}
    groups = {o.external_id: o.data async for o in client.iter_objects("Group")}
    contacts = {o.external_id: o.data async for o in client.iter_objects("Contact")}
    return {
        "users": {e: (u["userName"], u.get("displayName"), u.get("active"), u[PBX_USER]["extensionNumber"])
                  for e, u in users.items()},
        "groups": {e: (g["displayName"], g[PBX_GROUP]["extensionNumber"],
                       sorted(by_id[m["value"]] for m in g.get("members") or []))
                   for e, g in groups.items()},
        "contacts": {e: (c["displayName"], by_id.get(c.get("owner", "")), c.get("phoneNumbers"))
                     for e, c in contacts.items()},
    }


@pytest.fixture
async def two_pbxs(graph_env: GraphEnv, scim_server: ScimServer, scimmy_server: ScimmyServer, tmp_path: Path,
                   ) -> AsyncIterator[dict[str, tuple[SyncEnv, RewritingProxy]]]:
    """One Graph tenant, synced by two daemons (own state each) into scim2-server and SCIMMY."""
    envs: dict[str, tuple[SyncEnv, RewritingProxy]] = {}
    targets = {"scim2-server": (scim_server, scim_server.url("second-pbx")), "scimmy": (scimmy_server, scimmy_server.url())}
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        for name, (server, target) in targets.items():
            proxy, url = await stack.enter_async_context(rewriting_proxy(target))
            metrics, clock = Metrics(), FakeClock()
            client = PbxClient(Transport(session, "t", metrics, clock=clock), url, server.token)
            pbx = PbxEnv(server, "second-pbx", client, metrics, clock)
            env = await stack.enter_async_context(sqlite_sync_env(
                graph_env, pbx, tmp_path, name, users={"sync_photo": True, "photo_check_hours": 0},
                **scenario.config_sections()))
            envs[name] = (env, proxy)
        yield envs


async def run_both(envs: dict[str, tuple[SyncEnv, RewritingProxy]], world: scenario.Scenario) -> dict[str, int]:
    """One run on each PBX; each succeeds with exactly the expected objects and no write applied twice."""
    applied = {}
    for name, (env, proxy) in envs.items():
        report = await env.run()
        assert report.result == "success", (name, report.error, report.failures)
        assert report.failures == [] and report.groups.failures == [] and report.contacts.failures == [], name
        assert set(await env.pbx_users()) == world.expected_users(), name
        assert set(await env.pbx_contacts()) == world.expected_contacts(), name
        assert set(await env.pbx_groups()) == set(world.expected_groups()), name
        assert proxy.written_twice() == [], (name, proxy.written_twice())
        applied[name] = len(proxy.writes)
    states = [await snapshot(env.pbx.client) for env, _ in envs.values()]
    assert states[0] == states[1]
    return applied


async def test_the_same_sync_against_two_scim_servers_ends_the_same(
        two_pbxs: dict[str, tuple[SyncEnv, RewritingProxy]]) -> None:
    env, _ = two_pbxs["scim2-server"]
    world = scenario.build(env.graph.tenant)
    for user in world.users[:3]:
        env.graph.tenant.set_photo(user, PHOTO)
    initial = await run_both(two_pbxs, world)  # initial
    assert initial["scimmy"] == initial["scim2-server"] == world.writes_of_initial_run()
    assert await run_both(two_pbxs, world) == initial  # no change: nothing written

    scenario.working_day(world)  # changes and deprovisioning (hard-deleted leavers: DELETE)
    env.graph.tenant.change_user(world.users[15], accountEnabled=False)  # disabled: PATCH active=false
    changed = await run_both(two_pbxs, world)
    assert changed["scimmy"] - initial["scimmy"] == changed["scim2-server"] - initial["scim2-server"] > 0
    assert await run_both(two_pbxs, world) == changed
    disabled = (await snapshot(env.pbx.client))["users"][world.users[15]]
    assert disabled[2] is False

    # The photo: scim2-server keeps it; SCIMMY refuses the data: URI, every user is still written,
    # and the refusal is recorded on the object, not sent again.
    photos = {}
    for name, (each, _) in two_pbxs.items():
        stored = await each.pbx.client.find_by_external_id("User", world.users[0])
        assert stored is not None
        photos[name] = bool(stored.data.get("photos"))
    assert photos == {"scim2-server": True, "scimmy": False}
    scimmy, _ = two_pbxs["scimmy"]
    notes = await scimmy.db.fetchall("SELECT graph_id, last_error FROM synced_objects WHERE last_error IS NOT NULL")
    assert sorted(r[0] for r in notes) == sorted(world.users[:3])
    assert all("refused photos" in r[1] for r in notes)
    served = scimmy.pbx.server.requests()
    assert any(r.method == "POST" and r.path == "/v2/Bulk" and r.status == 200 for r in served)
    assert any(r.method == "POST" and r.path == "/v2/Users" and r.status == 400 for r in served)  # a photo refused
