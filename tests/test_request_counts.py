"""What a run costs, in requests (counts, not timings): a first read is a
"from now" link plus a listing of 999 users a page; a run with no change
asks Graph once and the PBX not at all."""

from __future__ import annotations

import math

from daemon.sync.read_users import read_users
from sim.generator import generate_tenant
from sync_fixtures import SyncEnv

DAY = 86400.0


def pbx_requests(env: SyncEnv) -> int:
    return int(sum(sample.value for family in env.pbx.metrics.registry.collect() for sample in family.samples
                   if sample.name == "m365sync_pbx_requests_total"))


async def test_a_first_read_of_10k_users_costs_about_n_over_999_requests(sync_env: SyncEnv) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=10_000, photo_fraction=0)
    read = await read_users(sync_env.tenant, sync_env.store, sync_env.sync_store, sync_env.graph.client)
    assert read.delta_link and read.full_round
    requests = sync_env.graph.sim.requests(r"^/users(/delta)?$")
    assert len(requests) <= math.ceil(len(made.all_users) / 999) + 2, len(requests)
    stored = [c async for c in sync_env.sync_store.iter_copies("t", "user")]
    assert len(stored) == len(made.all_users) and all(c.data.get("userPrincipalName") for c in stored)
    # the link was minted before the listing: the next round starts from it, with nothing to repeat
    await sync_env.store.save_delta_link("t", "users", read.delta_link)
    before = len(sync_env.graph.sim.requests())
    again = await read_users(sync_env.tenant, sync_env.store, sync_env.sync_store, sync_env.graph.client)
    assert not again.full_round and len(sync_env.graph.sim.requests()) == before + 1


async def test_a_change_after_the_first_read_comes_in_the_next_round(sync_env: SyncEnv) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=50, photo_fraction=0)
    read = await read_users(sync_env.tenant, sync_env.store, sync_env.sync_store, sync_env.graph.client)
    assert read.delta_link is not None
    await sync_env.store.save_delta_link("t", "users", read.delta_link)
    sync_env.graph.tenant.change_user(made.members[0], displayName="Renamed Meanwhile")
    await read_users(sync_env.tenant, sync_env.store, sync_env.sync_store, sync_env.graph.client)
    copy = await sync_env.sync_store.graph_copy("t", "user", made.members[0])
    assert copy is not None and copy.data["displayName"] == "Renamed Meanwhile"


async def test_a_run_without_changes_asks_graph_once_and_the_pbx_nothing(sync_env: SyncEnv) -> None:
    generate_tenant(sync_env.graph.tenant, users=60, photo_fraction=0)
    first = await sync_env.run()
    assert first.counts.get("create")
    graph, pbx = len(sync_env.graph.sim.requests()), pbx_requests(sync_env)
    report = await sync_env.run()
    assert report.counts == {} and report.result == "success"
    assert len(sync_env.graph.sim.requests()) == graph + 1  # the users delta
    assert pbx_requests(sync_env) == pbx  # no inventory, no discovery, no write


async def test_the_inventory_is_read_daily_and_a_new_number_costs_a_look_up(sync_env: SyncEnv) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=20, photo_fraction=0)
    await sync_env.run()
    lists = sync_env.pbx.metrics.registry.get_sample_value
    listed = lists("m365sync_pbx_requests_total", {"tenant": "t", "op": "list", "status": "200"})
    sync_env.graph.tenant.change_user(made.members[0], displayName="Renamed")
    await sync_env.run()  # an update needs no number: no listing
    assert lists("m365sync_pbx_requests_total", {"tenant": "t", "op": "list", "status": "200"}) == listed
    found = lists("m365sync_pbx_requests_total", {"tenant": "t", "op": "find", "status": "200"}) or 0.0
    sync_env.graph.tenant.add_user("00000000-0000-4000-9000-000000000001", displayName="New", accountEnabled=True,
                                   userPrincipalName="new@contoso.example", userType="Member")
    report = await sync_env.run()  # a new user is numbered from the state, and looked up by externalId
    assert report.counts == {"create": 1}
    after_create = lists("m365sync_pbx_requests_total", {"tenant": "t", "op": "list", "status": "200"})
    assert after_create is not None and after_create == listed
    assert lists("m365sync_pbx_requests_total", {"tenant": "t", "op": "find", "status": "200"}) == found + 1
    sync_env.graph.clock.advance(DAY)
    await sync_env.run()  # the daily reconciliation
    assert lists("m365sync_pbx_requests_total", {"tenant": "t", "op": "list", "status": "200"}) > after_create
