"""A run with new users numbers them from what the state knows (its allocations and the numbers
the last inventory read saw held by anyone else): no full PBX listing, one externalId look-up per
new user; a number set by hand on the PBX since is refused, then read and numbered again, once."""

from __future__ import annotations

from daemon.pbx.mapping import group_payload, user_payload
from daemon.pbx.schema import PBX_GROUP, PBX_USER
from daemon.pbx.types import PbxOperation
from sim.generator import generate_tenant
from sync_fixtures import SyncEnv

NEW_ID = "00000000-0000-4000-9000-000000000001"


def pbx_count(env: SyncEnv, op: str) -> float:
    return env.pbx.metrics.registry.get_sample_value(
        "m365sync_pbx_requests_total", {"tenant": "t", "op": op, "status": "200"}) or 0.0


def add_new_user(env: SyncEnv, upn: str = "new@contoso.example", graph_id: str = NEW_ID) -> None:
    env.graph.tenant.add_user(graph_id, displayName="New Hire", accountEnabled=True, userPrincipalName=upn,
                              userType="Member")


async def next_free_number(env: SyncEnv) -> str:
    held = {number for number, *_ in await env.sync_store.allocations("t")}
    return next(str(n) for n in range(1001, 100_000) if str(n) not in held)


async def create_by_hand(env: SyncEnv, external_id: str, upn: str, number: str) -> None:
    payload = user_payload({"id": external_id, "userPrincipalName": upn, "displayName": "Set by hand"},
                           extension_number=number, active=True, sign_in_as_administrator=False,
                           sign_in_as_standard_user=False)
    assert (await env.pbx.client.execute(PbxOperation("create", "User", external_id, payload=payload))).ok


async def test_one_new_user_among_300_makes_no_inventory_read(sync_env: SyncEnv) -> None:
    generate_tenant(sync_env.graph.tenant, users=300, photo_fraction=0)
    await sync_env.run()
    lists, finds, writes = pbx_count(sync_env, "list"), pbx_count(sync_env, "find"), sync_env.pbx_writes()
    expected = await next_free_number(sync_env)
    add_new_user(sync_env)
    report = await sync_env.run()
    assert report.counts == {"create": 1} and report.result == "success"
    assert pbx_count(sync_env, "list") == lists  # not one page of the PBX's users or groups
    assert pbx_count(sync_env, "find") == finds + 1  # the new user, looked up by externalId
    assert sync_env.pbx_writes() == writes + 1
    users = await sync_env.pbx_users()  # asserts no duplicate externalId or number
    assert users[NEW_ID][PBX_USER]["extensionNumber"] == expected


async def test_a_number_taken_by_hand_is_read_and_the_user_created_on_a_free_one(sync_env: SyncEnv) -> None:
    generate_tenant(sync_env.graph.tenant, users=20, photo_fraction=0)
    await sync_env.run()
    taken = await next_free_number(sync_env)
    await create_by_hand(sync_env, "hand-made-1", "reception@contoso.example", taken)  # after the last read
    lists = pbx_count(sync_env, "list")
    add_new_user(sync_env)
    report = await sync_env.run()
    assert report.counts == {"create": 1} and report.result == "success" and report.failures == []
    assert pbx_count(sync_env, "list") > lists  # the refusal made the run read the PBX's numbers, once
    users = await sync_env.pbx_users()
    assert users["hand-made-1"][PBX_USER]["extensionNumber"] == taken  # left alone
    number = users[NEW_ID][PBX_USER]["extensionNumber"]
    assert number != taken and int(number) >= 1001
    synced = (await sync_env.sync_store.synced_rows("t", "user"))[NEW_ID]
    assert synced.failures == 0 and synced.retry_at is None
    lists, writes = pbx_count(sync_env, "list"), sync_env.pbx_writes()
    again = await sync_env.run()  # nothing left to do: no write, no read
    assert again.counts == {} and sync_env.pbx_writes() == writes and pbx_count(sync_env, "list") == lists
    add_new_user(sync_env, "second@contoso.example", "00000000-0000-4000-9000-000000000002")
    second = await sync_env.run()  # the hand-set number is known now: no refusal, no read
    assert second.counts == {"create": 1} and pbx_count(sync_env, "list") == lists
    assert (await sync_env.pbx_users())["00000000-0000-4000-9000-000000000002"][PBX_USER]["extensionNumber"] != taken


async def test_a_new_user_already_on_the_pbx_is_adopted_with_its_number(sync_env: SyncEnv) -> None:
    generate_tenant(sync_env.graph.tenant, users=20, photo_fraction=0)
    await sync_env.run()
    await create_by_hand(sync_env, NEW_ID, "new@contoso.example", "1777")  # e.g. another install put it there
    lists = pbx_count(sync_env, "list")
    add_new_user(sync_env)
    report = await sync_env.run()
    assert report.counts == {"update": 1} and report.result == "success"
    assert pbx_count(sync_env, "list") == lists
    users = await sync_env.pbx_users()  # asserts it is there once
    assert users[NEW_ID][PBX_USER]["extensionNumber"] == "1777" and users[NEW_ID]["displayName"] == "New Hire"


async def test_a_new_group_is_numbered_without_a_read_and_again_when_its_number_is_taken(sync_env: SyncEnv) -> None:
    sales, support = "11111111-0000-4000-8000-00000000000a", "11111111-0000-4000-8000-00000000000b"
    generate_tenant(sync_env.graph.tenant, users=10, photo_fraction=0)
    sync_env.graph.tenant.add_group(sales, members=[], displayName="Sales")
    sync_env.graph.tenant.add_group(support, members=[], displayName="Support")
    sync_env.configure(groups=[sales], groups_starting_extension_number="2000")
    await sync_env.run()
    assert (await sync_env.pbx_groups())[sales][PBX_GROUP]["extensionNumber"] == "2000"
    hand_made = group_payload({"id": "hand-made-group", "displayName": "Front desk"}, extension_number="2001",
                              member_ids=[])
    assert (await sync_env.pbx.client.execute(PbxOperation("create", "Group", "hand-made-group", payload=hand_made))).ok
    lists = pbx_count(sync_env, "list")
    sync_env.configure(groups=[sales, support], groups_starting_extension_number="2000")
    report = await sync_env.run()  # 2001 looks free to the state: refused, then read and numbered again
    assert report.groups.counts == {"create": 1} and report.failures == [] and report.result == "success"
    assert pbx_count(sync_env, "list") > lists
    groups = await sync_env.pbx_groups()
    assert groups["hand-made-group"][PBX_GROUP]["extensionNumber"] == "2001"
    assert groups[support][PBX_GROUP]["extensionNumber"] == "2002"
