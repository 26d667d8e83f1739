"""SIGKILL the daemon right after its k-th PBX write of a first sync (200
users, one by one), for many k; a normal rerun must converge to exactly the
expected PBX, with no duplicate, and the run after that must write nothing.
Incremental runs of every kind, with and without /Bulk, are killed in
test_crash_all_kinds.py."""

from __future__ import annotations

import pytest

from live_fixtures import LiveEnv
from sim.generator import generate_tenant
from sim.store import SimTenant

INITIAL_USERS = 200
INCREMENTAL_USERS = 60
KILL_POINTS = 25


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


@pytest.mark.parametrize("kill_after", spread(initial_writes()))
async def test_initial_sync_killed_after_write_k_converges(live_env: LiveEnv, kill_after: int) -> None:
    made = generate_tenant(live_env.tenant, users=INITIAL_USERS, photo_fraction=0)
    code, _, _ = await live_env.sync(kill_after=kill_after)
    assert live_env.proxy.killed and code == -9
    await converge_and_check(live_env, set(made.members))
