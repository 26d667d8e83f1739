"""Personal contacts and shared mailboxes into the PBX directory."""

from __future__ import annotations

import math

from daemon.sync.report import describe_counts
from sim.generator import generate_tenant
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)

DAY = 86400.0


def add_user(env: SyncEnv, index: int, mailbox: str = "user", **fields: object) -> str:
    user_id = f"00000000-0000-4000-8000-{index:012d}"
    properties = {"displayName": f"User {index}", "userPrincipalName": f"user{index:03d}@contoso.example",
                  "accountEnabled": True, "userType": "Member", **fields}
    env.graph.tenant.add_user(user_id, mailbox=mailbox, **properties)
    return user_id


def contact(env: SyncEnv, owner: str, contact_id: str, folder: str = "contacts", **fields: object) -> None:
    properties = {"displayName": contact_id, "mobilePhone": "+1 555 0100", **fields}
    env.graph.tenant.put_contact(owner, contact_id, folder_id=folder, **properties)


async def test_personal_contacts_with_owner_and_phone_rule(sync_env: SyncEnv) -> None:
    alice, bob = add_user(sync_env, 1), add_user(sync_env, 2)
    contact(sync_env, alice, "c-a1", businessPhones=["+49 30 1234-56"], emailAddresses=[{"name": "x", "address": "x@y.example"}])
    contact(sync_env, alice, "c-a2", mobilePhone=None)  # no phone at all
    contact(sync_env, bob, "c-b1")
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert report.contacts.counts == {"create": 2} and report.contacts.skipped_without_phone == 1
    users = await sync_env.pbx_users()
    contacts = await sync_env.pbx_contacts()
    assert set(contacts) == {"c-a1", "c-b1"}
    assert contacts["c-a1"]["directory"] == "personal" and contacts["c-a1"]["owner"] == users[alice]["id"]
    assert contacts["c-a1"]["source"] == "user001@contoso.example"
    assert {"value": "+49 30 1234-56", "type": "work"} in contacts["c-a1"]["phoneNumbers"]
    writes = sync_env.pbx_writes()
    assert (await sync_env.run()).contacts.counts == {}
    assert sync_env.pbx_writes() == writes
    sync_env.configure(personal_contacts={"enabled": True, "require_phone": False})
    assert (await sync_env.run()).contacts.counts == {"create": 1}


async def test_contact_changes_and_deletions_follow(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    for name in ("c1", "c2", "c3"):
        contact(sync_env, owner, name)
    sync_env.configure(personal_contacts={"enabled": True})
    await sync_env.run()
    contact(sync_env, owner, "c1", displayName="Renamed", companyName="Fabrikam")
    sync_env.graph.tenant.delete_contact(owner, "c2")
    contact(sync_env, owner, "c4")
    report = await sync_env.run()
    assert report.contacts.counts == {"create": 1, "update": 1, "delete": 1}
    contacts = await sync_env.pbx_contacts()
    assert set(contacts) == {"c1", "c3", "c4"}
    assert contacts["c1"]["displayName"] == "Renamed" and contacts["c1"]["companyName"] == "Fabrikam"


async def test_a_new_folder_is_read_by_the_next_run_and_a_removed_one_takes_its_contacts(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    contact(sync_env, owner, "c-default")
    sync_env.configure(personal_contacts={"enabled": True})
    await sync_env.run()
    sync_env.graph.tenant.add_folder(owner, "folder-suppliers", "Suppliers")
    contact(sync_env, owner, "c-supplier", folder="folder-suppliers")
    sync_env.graph.clock.advance(24 * 3600)  # the mailbox's folder refresh is due (folder_refresh_hours)
    assert (await sync_env.run()).contacts.counts == {"create": 1}
    sync_env.graph.tenant.delete_folder(owner, "folder-suppliers")
    assert (await sync_env.run()).contacts.counts == {"delete": 1}
    assert set(await sync_env.pbx_contacts()) == {"c-default"}


async def test_user_leaving_scope_takes_their_contacts(sync_env: SyncEnv) -> None:
    stays, leaves = add_user(sync_env, 1), add_user(sync_env, 2)
    contact(sync_env, stays, "c-stays")
    contact(sync_env, leaves, "c-leaves")
    sync_env.configure(personal_contacts={"enabled": True})
    await sync_env.run()
    sync_env.graph.tenant.change_user(leaves, accountEnabled=False)
    report = await sync_env.run()
    assert report.counts == {"disable": 1} and report.contacts.counts == {"delete": 1}
    assert set(await sync_env.pbx_contacts()) == {"c-stays"}


async def test_shared_mailboxes_detected_and_listed_become_company_contacts(sync_env: SyncEnv) -> None:
    add_user(sync_env, 1)
    reception = add_user(sync_env, 2, mailbox="shared", displayName="Reception")
    sales = add_user(sync_env, 3, displayName="Sales Desk")  # a user mailbox, listed explicitly
    contact(sync_env, reception, "c-courier")
    contact(sync_env, sales, "c-lead")
    sync_env.configure(shared_mailbox={"enabled": True, "mailboxes": ["USER003@contoso.example"]})
    await sync_env.run()
    users = await sync_env.pbx_users()
    assert reception not in users and sales not in users  # shared mailboxes never get extensions
    contacts = await sync_env.pbx_contacts()
    assert set(contacts) == {"c-courier", "c-lead"}
    assert contacts["c-courier"]["directory"] == "company" and "owner" not in contacts["c-courier"]
    assert contacts["c-courier"]["source"] == "user002@contoso.example"
    checks = sync_env.graph_requests("/mailboxSettings")
    await sync_env.run()
    assert sync_env.graph_requests("/mailboxSettings") == checks  # cached, re-checked daily


async def test_unreadable_mailboxes_are_reported_once_and_the_others_sync(sync_env: SyncEnv) -> None:
    readable, locked = add_user(sync_env, 1), add_user(sync_env, 2)
    contact(sync_env, readable, "c-ok")
    contact(sync_env, locked, "c-locked")
    sync_env.graph.sim.api.settings.forbidden_mailboxes.add(locked)
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert report.contacts.unreadable == ["user002@contoso.example"] and report.result == "success"
    assert set(await sync_env.pbx_contacts()) == {"c-ok"}
    requests = sync_env.graph_requests(locked)
    report = await sync_env.run()
    assert report.contacts.unreadable == [] and sync_env.graph_requests(locked) == requests  # not retried every run


async def test_no_change_pass_at_1000_users_costs_one_batch_item_per_folder_and_per_mailbox(sync_env: SyncEnv) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=1000, contacts_per_user=1, photo_fraction=0)
    sync_env.configure(personal_contacts={"enabled": True, "require_phone": False})
    await sync_env.run()
    mailboxes = len(made.members)
    batches, writes = sync_env.graph_requests(r"^/\$batch$"), sync_env.pbx_writes()
    listings = sync_env.graph_requests(r"/contactFolders$")
    report = await sync_env.run()
    assert report.contacts.counts == {}
    # per mailbox: one delta per folder, and no folder listing (folders are listed on their own cadence)
    assert sync_env.graph_requests(r"^/\$batch$") - batches <= math.ceil(mailboxes * 1 / 20)
    assert sync_env.graph_requests(r"/contactFolders$") == listings
    assert sync_env.pbx_writes() == writes


async def test_a_contact_created_before_a_crash_is_adopted_not_duplicated(sync_env: SyncEnv) -> None:
    from daemon.pbx.client import PbxOperation
    from daemon.pbx.mapping import contact_payload

    owner = add_user(sync_env, 1)
    contact(sync_env, owner, "c-1")
    await sync_env.run()  # the user exists; personal contacts are still off
    users = await sync_env.pbx_users()
    # The previous run journaled "c-1", sent the create, and died before recording it.
    await sync_env.sync_store.journal_creates("t", [("contact", "c-1", None)])
    payload = contact_payload({"id": "c-1", "displayName": "c-1", "mobilePhone": "+1 555 0100"}, directory="personal",
                              source="user001@contoso.example", owner=users[owner]["id"])
    assert (await sync_env.pbx.client.execute(PbxOperation("create", "Contact", "c-1", payload=payload))).ok
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert sum(report.contacts.counts.values()) == 1 and "failed" not in report.contacts.counts
    assert set(await sync_env.pbx_contacts()) == {"c-1"}  # pbx_contacts fails on a duplicate externalId
    assert await sync_env.sync_store.pending_creates("t", "contact") == set()


async def test_expired_contacts_delta_reconciles_deletions_made_meanwhile(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    for name in ("c1", "c2"):
        contact(sync_env, owner, name)
    sync_env.configure(personal_contacts={"enabled": True})
    await sync_env.run()
    sync_env.graph.sim.api.expire_delta_tokens("syncStateNotFound")
    sync_env.graph.tenant.contacts[(owner, "contacts")].records.pop("c2")  # gone while our state was expired
    sync_env.graph.tenant.contacts[(owner, "contacts")]._ids.remove("c2")
    report = await sync_env.run()  # the folder is read afresh in the same run, and reconciled
    assert report.contacts.counts == {"delete": 1} and report.result == "success"
    assert set(await sync_env.pbx_contacts()) == {"c1"}


async def test_data_that_looks_like_an_internal_reference_is_written_as_data(sync_env: SyncEnv) -> None:
    """References to objects created in the run are typed values beside the write, not strings in it:
    a contact, a name or a photo-like text that spells one reaches the PBX as it is."""
    owner = add_user(sync_env, 1, jobTitle="graph-photo:abc")
    contact(sync_env, owner, "c-marker", displayName=f"pending-member:{owner}", companyName="pending-member:x")
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()  # the owner is created in this run: its contact names it through a UserRef
    assert report.contacts.counts == {"create": 1} and report.result == "success"
    users, contacts = await sync_env.pbx_users(), await sync_env.pbx_contacts()
    assert users[owner]["title"] == "graph-photo:abc"
    assert contacts["c-marker"]["displayName"] == f"pending-member:{owner}"
    assert contacts["c-marker"]["companyName"] == "pending-member:x"
    assert contacts["c-marker"]["owner"] == users[owner]["id"]
    assert (await sync_env.run()).contacts.counts == {}


async def test_counts_name_every_kind(sync_env: SyncEnv) -> None:
    """What a run reports counts every kind's writes: contacts are not lost beside the users."""
    owners = [add_user(sync_env, i) for i in range(1, 7)]
    for index in range(8):
        contact(sync_env, owners[index % 6], f"c-{index}")
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert report.counts_by_kind() == {"user": {"create": 6}, "contact": {"create": 8}}
    assert describe_counts(report.counts_by_kind()) == "user create 6; contact create 8"
    contact(sync_env, owners[0], "c-0", displayName="Renamed")
    report = await sync_env.run()  # a contact-only change is a change
    assert report.counts_by_kind() == {"contact": {"update": 1}}
    assert describe_counts(report.counts_by_kind()) == "contact update 1"
    assert describe_counts({}) == "no changes" and describe_counts({"create": 2}) == "user create 2"  # older records
