"""SIGKILL the daemon right after its k-th PBX write, during one run that
creates, updates and deletes users, groups and contacts, against a PBX with
/Bulk and one without (two requests in flight either way), on both state
backends. A normal rerun must leave exactly the expected PBX
(no duplicate by externalId or extension number, nothing missing), with no
failure, and the run after that must write nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

import scenario
from daemon.pbx.schema import PBX_GROUP, PBX_USER
from live_fixtures import LiveEnv, started_live_env, state_url_of
from sim.pbx import ScimServer

HIRES = 8  # n of scenario.working_day: 6n + 3 writes one by one
WRITES = {"one-by-one": 6 * HIRES + 3, "bulk": 26}  # the bulk PBX takes 2 operations per request
KILL_POINTS = 25
KILL_POINTS_POSTGRESQL = 9  # the same code path as SQLite's 25; the backend's own part is the journal's commit
BACKENDS = ("sqlite", "postgresql")


def spread(total: int, count: int = KILL_POINTS) -> list[int]:
    """``count`` write numbers from 1 to ``total``, first and last included."""
    return sorted({round(1 + i * (total - 1) / (count - 1)) for i in range(count)})


@pytest.fixture
async def kinds_env(request: pytest.FixtureRequest, tmp_path: object, scim_server_one_by_one: ScimServer,
                    scim_server_small_bulk: ScimServer) -> AsyncIterator[tuple[LiveEnv, scenario.Scenario]]:
    mode, backend = request.param
    server = scim_server_small_bulk if mode == "bulk" else scim_server_one_by_one
    settings, sections = scenario.config_toml()
    async with started_live_env(tmp_path, server, settings, sections,  # type: ignore[arg-type]
                                state_url=state_url_of(request, backend)) as env:
        world = scenario.build(env.tenant, users=40, contact_owners=10)
        code, out, err = await env.sync()
        assert code == 0 and "failed" not in out, out + err
        yield env, world


async def pbx_state(env: LiveEnv) -> dict[str, set[str]]:
    """Every kind's externalIds on the PBX; fails on a duplicate externalId or extension number."""
    found: dict[str, set[str]] = {}
    numbers: list[str] = []
    async with aiohttp.ClientSession() as session:
        client = await env.pbx_client(session)
        for kind in ("User", "Group", "Contact"):
            ids: list[str] = []
            async for obj in client.iter_objects(kind):  # type: ignore[arg-type]
                assert obj.external_id, f"a {kind} without externalId"
                ids.append(obj.external_id)
                urn = {"User": PBX_USER, "Group": PBX_GROUP}.get(kind)
                if urn:
                    numbers.append(str(dict(obj.data)[urn]["extensionNumber"]))
            assert len(ids) == len(set(ids)), f"duplicate {kind} externalId"
            found[kind] = set(ids)
    assert len(numbers) == len(set(numbers)), "duplicate extension numbers"
    return found


async def converges(env: LiveEnv, world: scenario.Scenario) -> None:
    code, out, err = await env.sync()
    assert code == 0 and "failed" not in out, out + err
    assert await pbx_state(env) == {"User": world.expected_users(), "Group": set(world.expected_groups()),
                                    "Contact": world.expected_contacts()}
    writes = env.proxy.writes
    code, out, _ = await env.sync()
    assert code == 0 and "failed" not in out and env.proxy.writes == writes, out


@pytest.mark.parametrize(("kinds_env", "kill_after"),
                         [((mode, backend), k) for mode in WRITES for backend in BACKENDS
                          for k in spread(WRITES[mode], KILL_POINTS if backend == "sqlite" else KILL_POINTS_POSTGRESQL)],
                         indirect=["kinds_env"])
async def test_run_of_every_kind_killed_after_write_k_converges(
        kinds_env: tuple[LiveEnv, scenario.Scenario], kill_after: int) -> None:
    env, world = kinds_env
    scenario.working_day(world, HIRES)
    before = env.proxy.writes
    code, _, _ = await env.sync(kill_after=before + kill_after)
    assert env.proxy.killed and code == -9
    await converges(env, world)


@pytest.mark.parametrize("kinds_env", [(mode, "sqlite") for mode in WRITES], indirect=True)
async def test_the_killed_run_is_as_long_as_the_kill_points_say(kinds_env: tuple[LiveEnv, scenario.Scenario],
                                                                request: pytest.FixtureRequest) -> None:
    env, world = kinds_env
    scenario.working_day(world, HIRES)
    before = env.proxy.writes
    await converges(env, world)
    mode, _ = request.node.callspec.params["kinds_env"]
    assert env.proxy.writes - before == WRITES[mode]


@pytest.mark.parametrize("kinds_env", [(mode, "sqlite") for mode in WRITES], indirect=True)  # deletes the SQLite file
async def test_a_deleted_state_database_adopts_every_object(kinds_env: tuple[LiveEnv, scenario.Scenario]) -> None:
    env, world = kinds_env
    for suffix in ("", "-wal", "-shm"):
        (env.tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    code, out, err = await env.sync()
    assert code == 0 and "failed" not in out, out + err
    await converges(env, world)  # nothing duplicated or missing, and the run after writes nothing
