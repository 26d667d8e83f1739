"""Turning a kind off takes what it put on the PBX away, through the
mass-deletion guard: contacts of personal_contacts and shared_mailbox."""

from __future__ import annotations

from sync_fixtures import SyncEnv
from test_contact_sync import add_user, contact


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
