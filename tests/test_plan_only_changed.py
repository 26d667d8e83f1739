"""A run plans and decodes what changed, not the tenant (issue 24, item 1):
an empty delta plans no user and decodes no stored copy or payload; k
changed users are planned and decoded k times over, at two tenant sizes;
a timer that comes due (a grace period) adds its user; a settings change
that alters the mapping plans everyone again. Counted by wrapping the
planner's ``add`` and the JSON decoder of the state's query modules, so a
run that reads every stored copy fails these tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

import scenario
from daemon.sync.plan_users import UserPlanner
from state import copies, due, pushed
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (every test on SQLite and PostgreSQL)


@dataclass
class Counts:
    planned: int = 0
    decoded: int = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    seen = Counts()
    original_add = UserPlanner.add

    def add(self: UserPlanner, copy: Any, synced: Any) -> None:
        seen.planned += 1
        original_add(self, copy, synced)

    def loads(text: str | bytes) -> Any:
        seen.decoded += 1
        return json.loads(text)

    monkeypatch.setattr(UserPlanner, "add", add)
    for module in (copies, due, pushed):  # every query module that decodes a stored copy or payload
        monkeypatch.setattr(module, "json", SimpleNamespace(loads=loads, dumps=json.dumps))
    yield seen


async def counted_run(env: SyncEnv, counts: Counts) -> tuple[int, int]:
    counts.planned = counts.decoded = 0
    report = await env.run()
    assert report.result == "success", report.failures
    return counts.planned, counts.decoded


@pytest.mark.parametrize("users", [200, 2000])
async def test_a_run_plans_and_decodes_only_what_changed(sync_env: SyncEnv, counts: Counts, users: int) -> None:
    world = scenario.build(sync_env.graph.tenant, users=users, contact_owners=0)
    planned, _ = await counted_run(sync_env, counts)
    assert planned == users  # the first run plans everyone

    assert await counted_run(sync_env, counts) == (0, 0)  # an empty delta: nothing planned, nothing decoded

    changed = world.users[20:25]
    for uid in changed:
        sync_env.graph.tenant.change_user(uid, jobTitle="Engineer")
    planned, decoded = await counted_run(sync_env, counts)
    assert planned == len(changed)
    # each changed user: its merge, its copy and its pushed payload; never the other users
    assert 0 < decoded <= 3 * len(changed)
    assert (await sync_env.pbx_users())[changed[0]]["title"] == "Engineer"

    assert await counted_run(sync_env, counts) == (0, 0)


async def test_a_grace_period_that_ends_plans_its_user_alone(sync_env: SyncEnv, counts: Counts) -> None:
    sync_env.configure(users={"delete_after_days": 1})
    world = scenario.build(sync_env.graph.tenant, users=50, contact_owners=0)
    await counted_run(sync_env, counts)  # the PBX inventory is read: the next daily reconciliation is due in 24 h
    hour = 3600
    sync_env.graph.clock.advance(12 * hour)
    leaver = world.users[7]
    sync_env.graph.tenant.soft_delete_user(leaver)
    assert (await counted_run(sync_env, counts))[0] == 1  # disabled; out of scope from now, deleted in a day
    sync_env.graph.clock.advance(11 * hour)
    assert (await counted_run(sync_env, counts))[0] == 0  # nothing due
    sync_env.graph.clock.advance(2 * hour)
    assert (await counted_run(sync_env, counts))[0] == 50  # the daily reconciliation plans everyone
    assert leaver in await sync_env.pbx_users()  # its grace period is not over yet
    sync_env.graph.clock.advance(12 * hour)
    assert (await counted_run(sync_env, counts))[0] == 1  # its grace period is over: deleted, planned alone
    assert leaver not in await sync_env.pbx_users()


async def test_a_mapping_setting_change_plans_every_user(sync_env: SyncEnv, counts: Counts) -> None:
    scenario.build(sync_env.graph.tenant, users=30, contact_owners=0)
    await counted_run(sync_env, counts)
    assert (await counted_run(sync_env, counts))[0] == 0
    sync_env.configure(users={"sync_guest_users": True})
    assert (await counted_run(sync_env, counts))[0] == 30
    assert (await counted_run(sync_env, counts))[0] == 0  # the new settings are the baseline now
