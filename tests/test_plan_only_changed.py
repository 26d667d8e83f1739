"""A run plans and decodes what changed, not the tenant (issue 24, item 1):
an empty delta plans no user, contact or group and decodes no stored copy
or payload; k changed users, contacts or groups are planned and decoded k
times over, at two tenant sizes; a timer that comes due (a grace period)
adds its user; a user who leaves plans his mailbox's contacts and his
groups; a settings change that alters the mapping plans everyone again.
Counted by wrapping the planners (``UserPlanner.add``,
``ContactPlanner.add``, the groups handed to ``plan_groups``) and the JSON
decoder of the state's query modules, so a run that reads every stored
copy fails these tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

import scenario
from daemon.sync import tenant as tenant_sync
from daemon.sync.plan_contacts import ContactPlanner
from daemon.sync.plan_users import UserPlanner
from state import copies, due, pushed
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (every test on SQLite and PostgreSQL)


@dataclass
class Counts:
    planned: int = 0
    decoded: int = 0
    contacts: int = 0
    groups: int = 0


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

    original_contact_add = ContactPlanner.add

    def add_contact(self: ContactPlanner, copy: Any, synced: Any) -> None:
        seen.contacts += 1
        original_contact_add(self, copy, synced)

    original_plan_groups = tenant_sync.plan_groups

    def plan_groups(snapshot: Any, copies: Any, synced: Any, *args: Any, **kwargs: Any) -> Any:
        seen.groups += len(set(copies) | set(synced))
        return original_plan_groups(snapshot, copies, synced, *args, **kwargs)

    monkeypatch.setattr(UserPlanner, "add", add)
    monkeypatch.setattr(ContactPlanner, "add", add_contact)
    monkeypatch.setattr(tenant_sync, "plan_groups", plan_groups)
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


def contacts_and_groups(env: SyncEnv, users: int) -> tuple[scenario.Scenario, list[str]]:
    """A tenant with a tenth of its users owning two contacts each, a shared mailbox with company contacts,
    and a group per 20 users (five members each) besides the scenario's three."""
    world = scenario.build(env.graph.tenant, users=users, contact_owners=users // 10)
    shared = world.users[-1]
    for number in range(3):
        env.graph.tenant.put_contact(shared, f"company-{number}", displayName=f"Supplier {number}",
                                     businessPhones=[f"+1 555 02{number:02d}"])
    groups = list(world.members)
    for index in range(users // 20):
        group = f"22222222-0000-4000-8000-{index:012d}"
        members = world.users[20 + 5 * index : 25 + 5 * index]
        env.graph.tenant.add_group(group, members=members, displayName=f"Team {index}")
        world.members[group] = set(members)
        groups.append(group)
    env.configure(personal_contacts={"enabled": True},
                  shared_mailbox={"enabled": True, "mailboxes": [f"user{users:03d}@contoso.example"]},
                  groups=groups, groups_starting_extension_number="90000")
    return world, groups


async def counted(env: SyncEnv, counts: Counts, *, mailboxes: bool = True) -> tuple[int, int, int, int]:
    """(users, contacts, groups) planned and the stored JSON decoded by one run."""
    counts.planned = counts.decoded = counts.contacts = counts.groups = 0
    client = env.pbx.client
    report = await tenant_sync.build_tenant_sync(env.tenant, env.store, env.sync_store, env.graph.client, client, client,
                                                 env.graph.clock.time, mailboxes=mailboxes).run()
    assert report.result == "success", report.failures
    return counts.planned, counts.contacts, counts.groups, counts.decoded


@pytest.mark.parametrize("users", [200, 2000])
async def test_contacts_and_groups_are_planned_only_when_they_change(sync_env: SyncEnv, counts: Counts,
                                                                     users: int) -> None:
    world, groups = contacts_and_groups(sync_env, users)
    first = await counted(sync_env, counts)
    assert first[1] == 2 * (users // 10) + 3 and first[2] == len(groups)  # the first run plans everything

    assert await counted(sync_env, counts) == (0, 0, 0, 0)  # an empty delta: nothing planned, nothing decoded

    changed = [contact for contact, owner in world.contacts.items() if owner == world.users[30]]
    for contact in changed:
        sync_env.graph.tenant.put_contact(world.users[30], contact, displayName=f"Changed {contact}",
                                          mobilePhone="+1 555 0999")
    team = groups[3]
    sync_env.graph.tenant.add_member(team, world.users[100])
    sync_env.graph.tenant.change_group(groups[4], displayName="Renamed team")
    planned_users, planned_contacts, planned_groups, decoded = await counted(sync_env, counts)
    assert (planned_users, planned_contacts, planned_groups) == (0, len(changed), 2)
    assert 0 < decoded <= 3 * (len(changed) + 2)  # each: its merge, its copy, its pushed payload
    pbx_contacts = await sync_env.pbx_contacts()
    assert {pbx_contacts[c]["displayName"] for c in changed} == {f"Changed {c}" for c in changed}
    assert (await sync_env.pbx_groups())[groups[4]]["displayName"] == "Renamed team"

    assert await counted(sync_env, counts) == (0, 0, 0, 0)


async def test_a_leaver_plans_his_contacts_and_his_groups_and_the_guard_counts_them(sync_env: SyncEnv,
                                                                                   counts: Counts) -> None:
    world, groups = contacts_and_groups(sync_env, 200)
    await counted(sync_env, counts)
    leaver = world.users[4]  # owns two contacts, in SALES and SUPPORT
    own = {contact for contact, owner in world.contacts.items() if owner == leaver}
    assert own and {group for group, members in world.members.items() if leaver in members} == set(groups[:2])
    sync_env.graph.tenant.hard_delete_user(leaver)
    planned_users, planned_contacts, planned_groups, _ = await counted(sync_env, counts)
    assert (planned_users, planned_contacts, planned_groups) == (1, len(own), 2)
    assert not own & set(await sync_env.pbx_contacts())
    for group in groups[:2]:
        assert leaver not in await members_on_pbx(sync_env, group)
    assert await counted(sync_env, counts) == (0, 0, 0, 0)

    # More leavers than the users' guard lets pass (20): their disables are held, so their mailboxes stay
    # active and none of their contacts is planned (the guard counts the synced users, decodes nobody).
    for uid in world.users[5:30]:
        sync_env.graph.tenant.soft_delete_user(uid)
    counts.planned = counts.decoded = counts.contacts = counts.groups = 0
    client = sync_env.pbx.client
    report = await tenant_sync.build_tenant_sync(sync_env.tenant, sync_env.store, sync_env.sync_store,
                                                 sync_env.graph.client, client, client,
                                                 sync_env.graph.clock.time).run()
    assert report.result == "deprovisions_held" and len(report.held) == 25
    assert counts.contacts == 0  # held disables keep their users, and so their mailboxes, active
    assert world.users[5] in await sync_env.pbx_users()


async def test_a_users_poll_leaves_a_changed_mailbox_for_the_next_run(sync_env: SyncEnv, counts: Counts) -> None:
    world, _ = contacts_and_groups(sync_env, 200)
    await counted(sync_env, counts)
    leaver = world.users[7]
    own = {contact for contact, owner in world.contacts.items() if owner == leaver}
    sync_env.graph.tenant.soft_delete_user(leaver)
    assert (await counted(sync_env, counts, mailboxes=False))[:2] == (1, 0)  # the poll plans no contact
    assert own <= set(await sync_env.pbx_contacts())
    assert (await counted(sync_env, counts))[:2] == (0, len(own))  # the next run plans the leaver's contacts
    assert not own & set(await sync_env.pbx_contacts())


async def test_a_contacts_setting_change_plans_every_contact_once(sync_env: SyncEnv, counts: Counts) -> None:
    _, groups = contacts_and_groups(sync_env, 200)
    await counted(sync_env, counts)
    sync_env.configure(personal_contacts={"enabled": True, "require_phone": False},
                       shared_mailbox={"enabled": True, "mailboxes": ["user200@contoso.example"]},
                       groups=groups, groups_starting_extension_number="90000")
    assert (await counted(sync_env, counts))[1] == 2 * 20 + 3
    assert (await counted(sync_env, counts))[1] == 0


async def members_on_pbx(env: SyncEnv, group: str) -> set[str]:
    users = {u["id"]: external for external, u in (await env.pbx_users()).items()}
    return {users[m["value"]] for m in (await env.pbx_groups())[group].get("members", [])}


async def test_a_partial_run_reads_the_changed_users_once(sync_env: SyncEnv, counts: Counts,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared mailboxes, photo checks and the user selection all start from the users merged since the
    last plan: one query gives it to the three, not one each."""
    sync_env.configure(shared_mailbox={"enabled": True}, users={"sync_photo": True})
    world = scenario.build(sync_env.graph.tenant, users=30, contact_owners=0)
    await counted_run(sync_env, counts)
    asked: list[str] = []
    original = due.DueQueries.dirty_ids

    async def dirty_ids(self: due.DueQueries, tenant: str, kind: str) -> set[str]:
        asked.append(kind)
        return await original(self, tenant, kind)

    monkeypatch.setattr(due.DueQueries, "dirty_ids", dirty_ids)
    sync_env.graph.tenant.change_user(world.users[3], jobTitle="Engineer")
    assert (await counted_run(sync_env, counts))[0] == 1
    assert asked.count("user") == 1
