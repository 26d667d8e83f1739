"""SIGKILL the daemon right after its k-th PBX write of a first sync (200
users), for many k: one by one (two writes in flight), and in full-size
/Bulk requests (two in flight), on both state backends. A normal rerun must
converge to exactly the expected PBX, with no duplicate, and the run after
that must write nothing. Incremental runs of every kind are killed in
test_crash_all_kinds.py."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from live_fixtures import FULL_BULK_OPERATIONS, LiveEnv, started_live_env, state_url_of
from sim.generator import generate_tenant
from sim.pbx import ScimServer
from sim.store import SimTenant

INITIAL_USERS = 200
INCREMENTAL_USERS = 60
KILL_POINTS = 25
KILL_POINTS_POSTGRESQL = 8  # the same code path as SQLite's 25; the backend's own part is the journal's commit


def spread(total: int, count: int = KILL_POINTS) -> list[int]:
    """``count`` write numbers from 1 to ``total``, first and last included."""
    return sorted({round(1 + i * (total - 1) / (count - 1)) for i in range(count)})


def initial_writes() -> int:
    return len(generate_tenant(SimTenant(), users=INITIAL_USERS, photo_fraction=0).members)


def incremental_mutations(env: LiveEnv, members: list[str]) -> tuple[set[str], dict[str, str]]:
    """10 new hires, 10 renames, 10 leavers: 30 writes. Returns (expected ids, expected names)."""
    tenant = env.tenant
    for index in range(10):
        tenant.add_user(f"00000000-0000-4000-9000-{index:012d}", displayName=f"New Hire {index}",
                        userPrincipalName=f"hire{index}@contoso.example", accountEnabled=True, userType="Member")
    for user in members[:10]:
        tenant.change_user(user, displayName=f"Renamed {user[-4:]}")
    for user in members[10:20]:
        tenant.hard_delete_user(user)
    expected = set(members[:10]) | set(members[20:]) | {f"00000000-0000-4000-9000-{i:012d}" for i in range(10)}
    names = {u: str(tenant.users.records[u].data["displayName"]) for u in expected}
    return expected, names


async def converge_and_check(env: LiveEnv, expected: set[str], names: dict[str, str] | None = None) -> None:
    code, out, err = await env.sync()
    assert code == 0, out + err
    users = await env.pbx_users()
    assert set(users) == expected
    if names is not None:
        assert {u: users[u]["displayName"] for u in expected} == names
    writes = env.proxy.writes
    code, out, _ = await env.sync()
    assert code == 0 and env.proxy.writes == writes, out


BULK_REQUESTS = math.ceil(initial_writes() / FULL_BULK_OPERATIONS)
CASES = ([("one-by-one", "sqlite", k) for k in spread(initial_writes())]
         + [("one-by-one", "postgresql", k) for k in spread(initial_writes(), KILL_POINTS_POSTGRESQL)]
         + [("bulk", backend, k) for backend in ("sqlite", "postgresql") for k in range(1, BULK_REQUESTS + 1)])


@pytest.fixture
async def crash_env(request: pytest.FixtureRequest, tmp_path: Path, scim_server_one_by_one: ScimServer,
                    scim_server_full_bulk: ScimServer) -> AsyncIterator[LiveEnv]:
    mode, backend = request.param
    server = scim_server_full_bulk if mode == "bulk" else scim_server_one_by_one
    async with started_live_env(tmp_path, server, state_url=state_url_of(request, backend)) as env:
        yield env


@pytest.mark.parametrize(("crash_env", "kill_after"), [((m, b), k) for m, b, k in CASES], indirect=["crash_env"])
async def test_initial_sync_killed_after_write_k_converges(crash_env: LiveEnv, kill_after: int) -> None:
    made = generate_tenant(crash_env.tenant, users=INITIAL_USERS, photo_fraction=0)
    code, _, _ = await crash_env.sync(kill_after=kill_after)
    assert crash_env.proxy.killed and code == -9
    await converge_and_check(crash_env, set(made.members))


@pytest.mark.parametrize("crash_env", [("bulk", "sqlite")], indirect=True)
async def test_an_initial_run_in_full_size_requests_is_as_long_as_the_kill_points_say(crash_env: LiveEnv) -> None:
    made = generate_tenant(crash_env.tenant, users=INITIAL_USERS, photo_fraction=0)
    await converge_and_check(crash_env, set(made.members))
    assert crash_env.proxy.writes == BULK_REQUESTS  # every request full but the last: the kill points above are all
