"""Turning a kind off takes what it put on the PBX away: contacts of
personal_contacts and shared_mailbox (through the mass-deletion guard), and
the busy windows of events."""

from __future__ import annotations

from datetime import timedelta

from daemon.sync.kinds import RUN_KINDS, Clients, build_pipelines
from daemon.sync.report import RunReport
from sync_fixtures import SyncEnv
from test_calendar_sync import busy, event, poll, setup
from test_contact_sync import add_user, contact


async def directory_run(env: SyncEnv) -> RunReport:
    """A run as the daemon builds it (users, groups, contacts, and whatever else a run does)."""
    report = RunReport()
    clients = Clients(env.graph.client, env.pbx.client, env.pbx.client)
    for pipeline in build_pipelines(RUN_KINDS, env.tenant, env.store, env.sync_store, clients, env.graph.clock.time):
        await pipeline.run(report)
    return report


async def test_turning_events_off_clears_the_busy_windows(sync_env: SyncEnv) -> None:
    user, idle = await setup(sync_env, users=2)
    event(sync_env, user, "e-soon", sync_env.graph.clock.now() + timedelta(minutes=5))
    assert (await poll(sync_env)).busy.written == 1 and len(await busy(sync_env, user)) == 1
    sync_env.configure(events={"enabled": False})
    writes = sync_env.pbx_writes()
    await directory_run(sync_env)  # no calendar is read, the pushed list goes
    assert await busy(sync_env, user) == [] and sync_env.pbx_writes() == writes + 1  # the idle user is not written
    await directory_run(sync_env)
    assert sync_env.pbx_writes() == writes + 1  # cleared once


async def test_turning_personal_contacts_off_deletes_them(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    contact(sync_env, owner, "c-plumber")
    sync_env.configure(personal_contacts={"enabled": True})
    await sync_env.run()
    assert set(await sync_env.pbx_contacts()) == {"c-plumber"}
    sync_env.configure(personal_contacts={"enabled": False})
    report = await sync_env.run()
    assert await sync_env.pbx_contacts() == {} and report.contacts.counts == {"delete": 1}
    assert owner in await sync_env.pbx_users()  # the user stays


async def test_turning_shared_mailboxes_off_deletes_their_company_contacts(sync_env: SyncEnv) -> None:
    add_user(sync_env, 1)
    reception = add_user(sync_env, 2, mailbox="shared", displayName="Reception")
    contact(sync_env, reception, "c-courier")
    sync_env.configure(shared_mailbox={"enabled": True})
    await sync_env.run()
    assert set(await sync_env.pbx_contacts()) == {"c-courier"}
    sync_env.configure(shared_mailbox={"enabled": False})
    await sync_env.run()
    assert await sync_env.pbx_contacts() == {}


async def test_turning_contacts_off_is_held_by_the_mass_deletion_guard(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    for index in range(101):  # the contacts' floor is 100 deletions a run
        contact(sync_env, owner, f"c-{index:03d}")
    sync_env.configure(personal_contacts={"enabled": True})
    await sync_env.run()
    sync_env.configure(personal_contacts={"enabled": False})
    report = await sync_env.run()
    assert report.result == "deprovisions_held" and len(await sync_env.pbx_contacts()) == 101
    assert await sync_env.sync_store.approve_held(sync_env.tenant.name) == 101
    await sync_env.run()
    assert await sync_env.pbx_contacts() == {}
