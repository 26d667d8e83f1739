"""Contact folders as Outlook really lists them (pages of 10, sub-folders under
``childFolders``, any order), a listing that did not complete, and the China
cloud without contacts delta: Graph simulator to a real SCIM server."""

from __future__ import annotations

from daemon.graph.clouds import CHINA_CONTACTS_LISTING_SECONDS
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)
from test_contact_sync import add_user, contact


def twelve_folders_and_a_sub_folder(env: SyncEnv, owner: str) -> set[str]:
    """12 top-level folders (two listing pages), one sub-folder, one contact in each and in the default: 14."""
    contact(env, owner, "c-default")
    for index in range(1, 13):
        env.graph.tenant.add_folder(owner, f"f-{index:02d}", f"Folder {index}")
        contact(env, owner, f"c-{index:02d}", folder=f"f-{index:02d}")
    env.graph.tenant.add_folder(owner, "f-07-sub", "Suppliers", parent="f-07")
    contact(env, owner, "c-sub", folder="f-07-sub")
    return {"c-default", "c-sub", *(f"c-{i:02d}" for i in range(1, 13))}


async def synced_folders(env: SyncEnv) -> tuple[str, set[str]]:
    """One user with the 14 contacts above, synced once."""
    owner = add_user(env, 1)
    expected = twelve_folders_and_a_sub_folder(env, owner)
    env.configure(personal_contacts={"enabled": True})
    await env.run()
    return owner, expected


async def test_twelve_folders_and_a_sub_folder_all_arrive_exactly_once(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    expected = twelve_folders_and_a_sub_folder(sync_env, owner)
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert report.result == "success" and report.contacts.counts == {"create": 14}
    assert set(await sync_env.pbx_contacts()) == expected  # pbx_contacts fails on a duplicate externalId
    assert sync_env.graph_requests(r"/contactFolders$") == 2  # the top-level listing took its two pages
    assert sync_env.graph_requests(r"/childFolders$") == 13  # every folder's sub-folders, the sub-folder's too


async def test_a_reordered_listing_deletes_nothing(sync_env: SyncEnv) -> None:
    _, expected = await synced_folders(sync_env)
    writes = sync_env.pbx_writes()
    sync_env.graph.sim.api.settings.folders_reversed = True  # other folders on the first page now
    sync_env.configure(personal_contacts={"enabled": True, "folder_refresh_hours": 0})  # listed again this run
    listings = sync_env.graph_requests(r"/contactFolders$")
    report = await sync_env.run()
    assert sync_env.graph_requests(r"/contactFolders$") == listings + 2
    assert report.result == "success" and report.contacts.counts == {}
    assert sync_env.pbx_writes() == writes and set(await sync_env.pbx_contacts()) == expected


async def test_an_incomplete_listing_deletes_nothing_and_the_run_is_partial(sync_env: SyncEnv) -> None:
    owner, expected = await synced_folders(sync_env)
    sync_env.graph.tenant.delete_folder(owner, "f-05")
    sync_env.graph.sim.fail_next(400, path_pattern=r"/childFolders$", in_batch=True, code="BadRequest")
    report = await sync_env.run()
    assert report.result == "partial" and "delete" not in report.contacts.counts
    assert any("listing incomplete" in failure for failure in report.failures)
    assert set(await sync_env.pbx_contacts()) == expected
    report = await sync_env.run()  # the listing completes: now the folder is known to be gone
    assert report.result == "success" and report.contacts.counts == {"delete": 1}
    assert set(await sync_env.pbx_contacts()) == expected - {"c-05"}


async def test_a_removed_sub_folder_takes_its_contacts(sync_env: SyncEnv) -> None:
    owner, expected = await synced_folders(sync_env)
    sync_env.graph.tenant.delete_folder(owner, "f-07-sub")
    report = await sync_env.run()
    assert report.contacts.counts == {"delete": 1}
    assert set(await sync_env.pbx_contacts()) == expected - {"c-sub"}


async def test_the_china_cloud_syncs_contacts_by_listing_on_its_own_cadence(sync_env: SyncEnv) -> None:
    sync_env.graph.sim.api.settings.china = True  # no contacts delta in 21Vianet's Graph
    owner = add_user(sync_env, 1)
    expected = twelve_folders_and_a_sub_folder(sync_env, owner)
    sync_env.configure(national_cloud="CHINA", personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert report.result == "success" and report.contacts.counts == {"create": 14}
    assert set(await sync_env.pbx_contacts()) == expected
    assert sync_env.graph_requests(r"/contacts/delta") == 0
    contact(sync_env, owner, "c-03", folder="f-03", displayName="Renamed")
    sync_env.graph.tenant.delete_contact(owner, "c-sub", folder_id="f-07-sub")
    listings = sync_env.graph_requests(r"/contacts$")
    assert (await sync_env.run()).contacts.counts == {}  # not due yet: nothing is read
    assert sync_env.graph_requests(r"/contacts$") == listings
    sync_env.graph.clock.advance(CHINA_CONTACTS_LISTING_SECONDS)
    report = await sync_env.run()
    assert report.result == "success" and report.contacts.counts == {"update": 1, "delete": 1}
    contacts = await sync_env.pbx_contacts()
    assert set(contacts) == expected - {"c-sub"} and contacts["c-03"]["displayName"] == "Renamed"
    writes = sync_env.pbx_writes()
    sync_env.graph.clock.advance(CHINA_CONTACTS_LISTING_SECONDS)
    assert (await sync_env.run()).contacts.counts == {} and sync_env.pbx_writes() == writes  # unchanged listing: no write
