"""Each mailbox's contact-folder list on its own, slower cadence: a run with
nothing changed reads one ``$batch`` item per delta link and lists no folder;
a new folder arrives once its mailbox's refresh is due; a folder whose delta
answers 404 or 410 has its mailbox listed again in the same run; a change
notification can ask for a listing (``relist_folders``), and neither such a
request made during a listing nor an interrupted listing is lost. Graph simulator to a
real SCIM server, on both state backends."""

from __future__ import annotations

import math
from collections import Counter

from daemon.sync.calendar import CalendarSync
from daemon.sync.folder_schedule import begin_listing, listing_due, relist_folders, remember_listed
from daemon.sync.report import RunReport
from sim.generator import generate_tenant
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)
from test_contact_sync import add_user, contact

HOUR = 3600.0
LISTINGS = r"/(contactFolders|childFolders)$"


async def poll(env: SyncEnv) -> RunReport:
    report = RunReport()
    await CalendarSync(env.tenant, env.store, env.sync_store, env.graph.client, env.pbx.client,
                       env.graph.clock.time).run(report)
    return report


async def one_mailbox_with_a_folder(env: SyncEnv) -> str:
    """One user with a contact in the default folder and one in "f-1", synced once."""
    owner = add_user(env, 1)
    contact(env, owner, "c-default")
    env.graph.tenant.add_folder(owner, "f-1", "Suppliers")
    contact(env, owner, "c-1", folder="f-1")
    env.configure(personal_contacts={"enabled": True})
    assert (await env.run()).contacts.counts == {"create": 2}
    return owner


async def test_a_no_change_run_and_poll_read_one_batch_item_per_delta_link_and_list_no_folder(sync_env: SyncEnv) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=60, contacts_per_user=1, events_per_user=1, photo_fraction=0)
    # Every fifth mailbox: two top-level folders, one with a sub-folder; four folders with the default, which
    # Outlook's limit of 4 requests in flight per mailbox lets go out at once (more wait for a later $batch).
    nested = sorted(made.members)[::5]
    for owner in nested:
        for index in range(2):
            sync_env.graph.tenant.add_folder(owner, f"f{index}-{owner}", f"Folder {index}")
        sync_env.graph.tenant.add_folder(owner, f"sub-{owner}", "Suppliers", parent=f"f0-{owner}")
        contact(sync_env, owner, f"c-sub-{owner}", folder=f"sub-{owner}")
    sync_env.configure(personal_contacts={"enabled": True, "require_phone": False}, events={"enabled": True})
    await sync_env.run()
    await poll(sync_env)
    folder_links = await sync_env.store.delta_links("t", "contacts")
    calendar_links = await sync_env.store.delta_links("t", "events")
    assert len(calendar_links) >= 40 and len(folder_links) == len(calendar_links) + 3 * len(nested)

    logged = len(sync_env.graph.sim.log)
    report = await sync_env.run()
    await poll(sync_env)
    assert report.result == "success" and report.plan == []
    asked = sync_env.graph.sim.log[logged:]
    items = Counter("listing" if r.path.endswith(("/contactFolders", "/childFolders")) else
                    "contacts delta" if r.path.endswith("/contacts/delta") else
                    "calendar delta" if r.path.endswith("/calendarView/delta") else r.path
                    for r in asked if r.in_batch)
    assert items == {"contacts delta": len(folder_links), "calendar delta": len(calendar_links)}  # no listing
    assert [r.path for r in asked if not r.in_batch] == ["/users/delta"] + ["/$batch"] * (
        math.ceil(len(folder_links) / 20) + math.ceil(len(calendar_links) / 20))  # 20 items a $batch


async def test_a_new_folder_arrives_once_its_mailbox_is_due(sync_env: SyncEnv) -> None:
    owner = await one_mailbox_with_a_folder(sync_env)
    sync_env.graph.tenant.add_folder(owner, "f-new", "New")
    contact(sync_env, owner, "c-new", folder="f-new")
    listings = sync_env.graph_requests(LISTINGS)
    assert (await sync_env.run()).contacts.counts == {}  # not due: the stored folders are read
    assert sync_env.graph_requests(LISTINGS) == listings
    sync_env.graph.clock.advance(24 * HOUR)  # folder_refresh_hours = 24: its moment in the cycle has passed
    assert (await sync_env.run()).contacts.counts == {"create": 1}
    assert sync_env.graph_requests(LISTINGS) > listings
    assert set(await sync_env.pbx_contacts()) == {"c-default", "c-1", "c-new"}


async def test_refresh_hours_zero_lists_every_run(sync_env: SyncEnv) -> None:
    owner = await one_mailbox_with_a_folder(sync_env)
    sync_env.configure(personal_contacts={"enabled": True, "folder_refresh_hours": 0})
    sync_env.graph.tenant.add_folder(owner, "f-new", "New")
    contact(sync_env, owner, "c-new", folder="f-new")
    assert (await sync_env.run()).contacts.counts == {"create": 1}


async def test_a_deleted_folders_404_relists_its_mailbox_in_the_same_run(sync_env: SyncEnv) -> None:
    owner = await one_mailbox_with_a_folder(sync_env)
    other = add_user(sync_env, 2)
    contact(sync_env, other, "c-other")
    await sync_env.run()
    sync_env.graph.tenant.delete_folder(owner, "f-1")
    sync_env.graph.tenant.add_folder(owner, "f-2", "Moved here")  # a folder replacing it is read in the same run
    contact(sync_env, owner, "c-2", folder="f-2")
    listings = sync_env.graph_requests(r"/contactFolders$")
    report = await sync_env.run()
    assert report.result == "success" and report.contacts.counts == {"create": 1, "delete": 1}
    assert sync_env.graph_requests(r"/contactFolders$") == listings + 1  # that mailbox only
    assert set(await sync_env.pbx_contacts()) == {"c-default", "c-2", "c-other"}
    assert set(await sync_env.store.delta_links("t", "contacts")) == {f"{owner}:contacts", f"{owner}:f-2",
                                                                     f"{other}:contacts"}


async def test_a_410_on_a_folders_delta_relists_its_mailbox_and_reads_the_folder_afresh(sync_env: SyncEnv) -> None:
    owner = await one_mailbox_with_a_folder(sync_env)
    sync_env.graph.tenant.add_folder(owner, "f-2", "New")
    contact(sync_env, owner, "c-2", folder="f-2")
    sync_env.graph.sim.fail_next(410, path_pattern=r"/contactFolders/f-1/contacts/delta", in_batch=True,
                                 code="syncStateNotFound")
    listings = sync_env.graph_requests(r"/contactFolders$")
    report = await sync_env.run()
    assert report.result == "success" and report.contacts.counts == {"create": 1}  # the new folder's; f-1 stays
    assert sync_env.graph_requests(r"/contactFolders$") == listings + 1
    assert set(await sync_env.pbx_contacts()) == {"c-default", "c-1", "c-2"}


async def test_a_notification_hook_makes_a_mailbox_due(sync_env: SyncEnv) -> None:
    owner = await one_mailbox_with_a_folder(sync_env)
    sync_env.graph.tenant.add_folder(owner, "f-new", "New")
    contact(sync_env, owner, "c-new", folder="f-new")
    assert (await sync_env.run()).contacts.counts == {}
    await relist_folders(sync_env.sync_store, "t", [owner])
    assert (await sync_env.run()).contacts.counts == {"create": 1}


async def test_an_incomplete_listing_is_repeated_by_the_next_run(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    sync_env.graph.tenant.add_folder(owner, "f-1", "Suppliers")
    contact(sync_env, owner, "c-1", folder="f-1")
    sync_env.configure(personal_contacts={"enabled": True})
    sync_env.graph.sim.fail_next(400, path_pattern=r"/contactFolders$", in_batch=True, code="BadRequest")
    assert (await sync_env.run()).result == "partial"
    assert (await sync_env.run()).contacts.counts == {"create": 1}  # listed again, not only a day later


def test_refreshes_spread_over_the_cycle_and_none_waits_longer_than_a_cycle_and_a_run() -> None:
    mailboxes = [f"00000000-0000-4000-8000-{index:012d}" for index in range(1000)]
    listed = dict.fromkeys(mailboxes, 0.0)  # all listed by one first run
    per_run: list[int] = []
    gaps: list[float] = []
    for run in range(1, 24 * 3 + 1):  # hourly runs for three days
        now = run * HOUR
        due = [m for m in mailboxes if listing_due(m, listed[m], now, 24)]
        per_run.append(len(due))
        for mailbox in due:
            gaps.append(now - listed[mailbox])
            listed[mailbox] = now
    assert max(per_run) <= 2 * 1000 / 24 and sum(per_run[24:]) == 2 * 1000  # spread; once a cycle after the first
    assert max(gaps) <= 25 * HOUR and max(now - t for t in listed.values()) <= 25 * HOUR


async def test_an_interrupted_listing_is_repeated_by_the_next_run(sync_env: SyncEnv) -> None:
    owner = await one_mailbox_with_a_folder(sync_env)
    sync_env.graph.tenant.add_folder(owner, "f-new", "New")
    contact(sync_env, owner, "c-new", folder="f-new")
    await begin_listing(sync_env.sync_store, "t", [owner], sync_env.graph.clock.time())  # then the process died
    listings = sync_env.graph_requests(LISTINGS)
    assert (await sync_env.run()).contacts.counts == {"create": 1}
    assert sync_env.graph_requests(LISTINGS) > listings
    assert (await sync_env.sync_store.folder_listings("t"))[owner].pending is False  # completed now
    listings = sync_env.graph_requests(LISTINGS)
    await sync_env.run()
    assert sync_env.graph_requests(LISTINGS) == listings


async def test_a_relist_asked_for_during_a_listing_is_not_lost(sync_env: SyncEnv) -> None:
    owner = await one_mailbox_with_a_folder(sync_env)
    store, now = sync_env.sync_store, sync_env.graph.clock.time()
    await begin_listing(store, "t", [owner], now)
    await relist_folders(store, "t", [owner])  # a notification, while the listing's requests are out
    await remember_listed(store, "t", [owner])  # that listing completes
    assert (await store.folder_listings("t"))[owner].pending
    sync_env.graph.tenant.add_folder(owner, "f-new", "New")
    contact(sync_env, owner, "c-new", folder="f-new")
    assert (await sync_env.run()).contacts.counts == {"create": 1}  # listed again
