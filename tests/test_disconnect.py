"""`m365sync disconnect`: tokens forgotten, runs stopped and the presence it
pushed cleared; with --deprovision
the tenant's objects are undone on the PBX through the guard; a tenant gone
from the configuration is listed until it is disconnected, then forgotten."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import scenario
from daemon.commands import open_stores
from daemon.config import load_config
from daemon.metrics import Metrics
from daemon.pbx.schema import PBX_USER
from daemon.service import Service
from daemon.sync.apply import Applier
from daemon.sync.presence import plan_presence
from daemon.sync.report import RunReport
from live_fixtures import LiveEnv, started_live_env
from sim.pbx import ScimServer


@pytest.fixture
async def synced(tmp_path: Path, scim_server_one_by_one: ScimServer) -> AsyncIterator[tuple[LiveEnv, scenario.Scenario]]:
    settings, sections = scenario.config_toml()
    async with started_live_env(tmp_path, scim_server_one_by_one, settings, sections) as env:
        world = scenario.build(env.tenant, users=30, contact_owners=5)
        code, out, err = await env.sync()
        assert code == 0 and "failed" not in out, out + err
        yield env, world


async def pbx_counts(env: LiveEnv) -> dict[str, int]:
    async with aiohttp.ClientSession() as session:
        client = await env.pbx_client(session)
        users = [o async for o in client.iter_objects("User")]
        return {"active users": sum(1 for u in users if u.data.get("active")), "users": len(users),
                "groups": len([o async for o in client.iter_objects("Group")]),
                "contacts": len([o async for o in client.iter_objects("Contact")])}


async def test_disconnect_forgets_the_tokens_and_stops_the_runs(synced: tuple[LiveEnv, scenario.Scenario]) -> None:
    env, world = synced
    before = await pbx_counts(env)
    code, out, _ = await env.m365sync("disconnect", "--tenant", "contoso")
    assert code == 0 and "disconnected" in out
    env.tenant.change_user(world.users[0], displayName="Changed After Disconnect")
    writes = env.proxy.writes
    code, out, _ = await env.sync()
    assert code == 1 and "was disconnected" in out and env.proxy.writes == writes
    assert await pbx_counts(env) == before  # nothing on the PBX was undone
    code, out, _ = await env.m365sync("status")
    assert "authorization: disconnected" in out


async def test_deprovision_goes_through_the_guard(synced: tuple[LiveEnv, scenario.Scenario]) -> None:
    env, world = synced
    code, out, _ = await env.m365sync("disconnect", "--tenant", "contoso", "--deprovision")
    assert code == 3 and "held by the mass-deletion guard" in out  # 30 users at once is over 20
    assert (await pbx_counts(env))["active users"] == len(world.users)
    code, out, _ = await env.m365sync("approve", "--tenant", "contoso")
    assert code == 0
    code, out, err = await env.m365sync("disconnect", "--tenant", "contoso", "--deprovision")
    assert code == 0 and "deprovisioned" in out and "held" not in out, out + err
    counts = await pbx_counts(env)
    assert counts == {"active users": 0, "users": len(world.users), "groups": 0, "contacts": 0}


async def test_a_tenant_gone_from_the_configuration_is_listed_until_disconnected(
        synced: tuple[LiveEnv, scenario.Scenario]) -> None:
    env, _ = synced
    env.config.write_text(env.config.read_text().replace('name = "contoso"', 'name = "renamed"'))
    code, out, _ = await env.m365sync("status")
    assert "contoso (not in the configuration; its state stays until: m365sync disconnect --tenant contoso)" in out
    service = Service(load_config(env.config), environ={}, schedule=False)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{service.bound_port}/readyz") as response:
                ready = await response.json()
    finally:
        await service.stop()
    assert ready["tenants"]["contoso"]["reason"] == "not_in_config"
    assert "m365sync disconnect --tenant contoso" in ready["tenants"]["contoso"]["detail"]
    code, _, err = await env.m365sync("disconnect", "--tenant", "contoso", "--deprovision")
    assert code == 2 and "cannot be reached" in err
    code, out, _ = await env.m365sync("disconnect", "--tenant", "contoso")
    assert code == 0 and "forgotten" in out
    code, out, _ = await env.m365sync("status")
    assert "contoso" not in out


async def pbx_presences(env: LiveEnv) -> dict[str, object]:
    """Each PBX user's pbx:presence, by externalId (users without one left out)."""
    async with aiohttp.ClientSession() as session:
        client = await env.pbx_client(session)
        return {str(o.data.get("externalId")): o.data[PBX_USER]["presence"] async for o in client.iter_objects("User")
                if o.data.get(PBX_USER, {}).get("presence")}


async def test_disconnect_clears_the_presence_pushed_to_the_tenants_users(
        synced: tuple[LiveEnv, scenario.Scenario]) -> None:
    env, _ = synced
    async with open_stores(load_config(env.config), Metrics()) as stores, aiohttp.ClientSession() as session:
        users = (await stores.sync.active_users("contoso"))[:2]  # pushed as a presence poll pushes it
        plan = plan_presence(users, {u: ("Busy", "InACall") for u, _, _ in users}, {})
        await Applier("contoso", stores.sync, await env.pbx_client(session), RunReport()).apply(plan)
    assert len(await pbx_presences(env)) == 2
    code, out, _ = await env.m365sync("disconnect", "--tenant", "contoso")
    assert code == 0 and "presence cleared from 2 user(s)" in out and "disconnected" in out
    assert await pbx_presences(env) == {}
    async with open_stores(load_config(env.config), Metrics()) as stores:
        assert await stores.sync.presence_states("contoso") == {}
