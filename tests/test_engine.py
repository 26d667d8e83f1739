"""The engine's guarantees beyond one kind: the group-edit race, partial delta
items, unreadable mailboxes asked again, settings that select nobody, one
number pool, the guard for every kind, dry-run lines and /Bulk for busy
windows."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta

import structlog

import scenario
from daemon.logging import configure_logging
from daemon.pbx.dryrun import DryRunPbxClient
from daemon.pbx.schema import PBX_GROUP, PBX_USER
from daemon.sync.calendar import CalendarSync
from daemon.sync.read_users import _merge
from daemon.sync.report import RunReport
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)

DAY = 86400.0


async def pbx_members(env: SyncEnv, group: str) -> set[str]:
    users = {u["id"]: external for external, u in (await env.pbx_users()).items()}
    return {users[m["value"]] for m in (await env.pbx_groups())[group].get("members", [])}


async def test_a_member_removed_while_the_groups_list_is_edited_does_not_stay(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=12)
    leaving = world.users[0]
    sync_env.configure(groups=[scenario.SALES], groups_starting_extension_number="2000",
                       users={"sync_type": "INCLUDE"})
    await sync_env.run()
    assert leaving in await pbx_members(sync_env, scenario.SALES)
    sync_env.graph.tenant.remove_member(scenario.SALES, leaving)  # in the same interval as the edit:
    sync_env.configure(groups=[scenario.SALES, scenario.SUPPORT], groups_starting_extension_number="2000",
                       users={"sync_type": "INCLUDE"})
    report = await sync_env.run()
    assert report.result == "success", report.failures
    assert leaving not in await pbx_members(sync_env, scenario.SALES)
    assert (await sync_env.pbx_users())[leaving]["active"] is False  # INCLUDE: no longer in any group


async def test_a_partial_item_of_an_unknown_user_is_completed_before_planning(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=3, contact_owners=0)
    unknown = world.users[2]
    await sync_env.run()
    await sync_env.sync_store.purge_graph_object("t", "user", unknown)  # as after a lost state
    await sync_env.sync_store.forget_synced("t", "user", unknown)
    gets = sync_env.graph_requests(f"^/users/{unknown}$")
    completed = await _merge(sync_env.tenant, sync_env.sync_store, sync_env.graph.client,
                             [{"id": unknown, "displayName": "Only The Changed Property"}])
    assert completed == 1 and sync_env.graph_requests(f"^/users/{unknown}$") == gets + 1
    copy = await sync_env.sync_store.graph_copy("t", "user", unknown)
    assert copy is not None and copy.data["userPrincipalName"] == "user003@contoso.example"
    report = await sync_env.run()
    assert report.failures == [] and "failed" not in report.counts
    assert (await sync_env.pbx_users())[unknown]["userName"] == "user003@contoso.example"


async def test_an_unreadable_mailbox_is_asked_again_after_reauthorization_and_daily(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=2, contact_owners=2)
    locked = world.users[1]
    sync_env.graph.sim.api.settings.forbidden_mailboxes.add(locked)
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert report.contacts.unreadable == ["user002@contoso.example"]
    asked = sync_env.graph_requests(locked)
    await sync_env.run()
    assert sync_env.graph_requests(locked) == asked  # not every run
    sync_env.graph.clock.advance(60)
    await sync_env.store.set_auth_state("t", "authorized")  # an admin authorized again
    sync_env.graph.sim.api.settings.forbidden_mailboxes.clear()
    report = await sync_env.run()
    assert sync_env.graph_requests(locked) > asked and report.contacts.unreadable == []
    assert set(await sync_env.pbx_contacts()) == world.expected_contacts()
    sync_env.graph.sim.api.settings.forbidden_mailboxes.add(locked)
    await sync_env.run()
    asked = sync_env.graph_requests(locked)
    sync_env.graph.clock.advance(DAY)
    await sync_env.run()
    assert sync_env.graph_requests(locked) > asked  # and at least daily


async def test_settings_that_select_nobody_are_reported(sync_env: SyncEnv) -> None:
    scenario.build(sync_env.graph.tenant, users=3, contact_owners=0)
    empty = "11111111-0000-4000-8000-0000000000ee"
    sync_env.graph.tenant.add_group(empty, members=[], displayName="Nobody Here")
    sync_env.configure(groups=[empty], groups_starting_extension_number="2000",
                       users={"selected_users": ["ghost@contoso.example"]},
                       sign_in_as_administrator={"enabled": True, "selected_users": ["boss@contoso.example"]})
    report = await sync_env.run()
    text = "\n".join(report.selects_nobody)
    assert "users.selected_users entry 'ghost@contoso.example' matches no user" in text
    assert "sign_in_as_administrator.selected_users entry 'boss@contoso.example' matches no user" in text
    assert "group 'Nobody Here'" in text and "no member" in text
    sync_env.configure(users={"enabled": False}, sign_in_as_standard_user={"enabled": True})
    report = await sync_env.run()
    assert any("users.enabled = false" in note for note in report.selects_nobody)


async def test_group_numbers_follow_the_users_reuse_rule(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=2, contact_owners=0)
    await sync_env.run()
    freed = (await sync_env.pbx_users())[world.users[0]][PBX_USER]["extensionNumber"]
    sync_env.graph.tenant.hard_delete_user(world.users[0])
    await sync_env.run()
    sync_env.configure(groups=[scenario.SALES], groups_starting_extension_number=freed)
    await sync_env.run()
    number = (await sync_env.pbx_groups())[scenario.SALES][PBX_GROUP]["extensionNumber"]
    assert number != freed  # released less than extension_reuse_days ago


async def test_the_guard_holds_mass_deletions_of_groups_and_contacts(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=20, contact_owners=5)
    sync_env.configure(**scenario.config_sections(), users={"max_deprovisions_per_run": 1})
    await sync_env.run()
    sync_env.configure(groups_starting_extension_number=None, personal_contacts={"enabled": True},
                       users={"max_deprovisions_per_run": 1})  # every PBX group goes at once
    report = await sync_env.run()
    assert report.result == "deprovisions_held" and report.groups.counts == {}
    assert len(await sync_env.pbx_groups()) == 3
    assert len(await sync_env.sync_store.held("t")) == 3
    assert await sync_env.sync_store.approve_held("t") == 3
    report = await sync_env.run()
    assert report.groups.counts == {"delete": 3} and await sync_env.pbx_groups() == {}
    assert set(await sync_env.pbx_contacts()) == world.expected_contacts()


async def test_a_dry_run_plans_every_kind_and_writes_nothing(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant)
    sync_env.configure(**scenario.config_sections())
    await sync_env.run()
    scenario.working_day(world)
    writes = sync_env.pbx_writes()
    report = await sync_env.run(writer=DryRunPbxClient())
    assert sync_env.pbx_writes() == writes
    kinds = {line.split()[1] for line in report.plan}
    assert kinds == {"user", "group", "contact"}
    assert any(line.startswith("delete group") for line in report.plan)
    assert any(line.startswith("update group Sales and Marketing") for line in report.plan)


async def test_busy_windows_go_through_bulk(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=10, contact_owners=0)
    sync_env.configure(events={"enabled": True})
    await sync_env.run()
    start = sync_env.graph.clock.now() + timedelta(hours=1)
    for user in world.users:
        sync_env.graph.tenant.put_event(user, f"e-{user[-3:]}", subject="Planning",
                                        start={"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                                        end={"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                                             "timeZone": "UTC"}, showAs="busy", isCancelled=False)
    def requests(op: str) -> float:
        return sum(sample.value for family in sync_env.pbx.metrics.registry.collect() for sample in family.samples
                   if sample.name == "m365sync_pbx_requests_total" and sample.labels.get("op") == op)

    bulks, patches = requests("bulk"), requests("update")
    report = RunReport()
    await CalendarSync(sync_env.tenant, sync_env.store, sync_env.sync_store, sync_env.graph.client,
                       sync_env.pbx.client, sync_env.graph.clock.time).run(report)
    assert report.busy.written == 10 and report.failures == []
    assert requests("bulk") == bulks + 1 and requests("update") == patches  # one /Bulk of 10 PATCHes, none alone
    assert all(u[PBX_USER]["busy"] for u in (await sync_env.pbx_users()).values())


async def test_a_run_that_writes_nothing_logs_its_plan_at_debug_only(sync_env: SyncEnv) -> None:
    """Users polls and backstop slices run every minute and mostly plan nothing: an info line each
    would be two a minute per tenant saying nothing."""
    scenario.build(sync_env.graph.tenant, users=3, contact_owners=3)
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    try:
        await sync_env.run()  # the first run creates the users
        await sync_env.run()  # nothing changed
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    plans = [line for line in map(json.loads, out.getvalue().splitlines()) if line["event"] == "sync plan"]
    assert [(p["level"], p["writes"] > 0) for p in plans] == [("info", True), ("debug", False)]
