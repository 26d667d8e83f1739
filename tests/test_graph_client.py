"""The Graph client against the simulator: delta rounds, batching, faults."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.errors import (
    AccessDenied,
    AuthorizationRequired,
    DeltaExpired,
    GraphNotFound,
    GraphRequestError,
    GraphThrottled,
    GraphUnavailable,
)
from daemon.graph.batch import BatchExecutor, BatchRequest, BatchResult
from daemon.graph.client import endpoint_label
from daemon.graph.delta import DeltaRound, is_removed
from graph_fixtures import GraphEnv, StaticTokens
from sim.generator import generate_tenant

USER_SELECT = "/users/delta?$select=displayName,userPrincipalName,accountEnabled,userType,mobilePhone"


async def drain(round_: DeltaRound) -> list[dict[str, Any]]:
    return [change async for change in round_]


async def test_users_round_spans_pages_and_ends_with_a_delta_link(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=350)
    round_ = DeltaRound(graph_env.client, USER_SELECT)
    changes = await drain(round_)
    assert sorted(c["id"] for c in changes) == sorted(made.all_users)
    assert round_.pages >= 3
    assert round_.delta_link is not None and "$deltatoken" in round_.delta_link.replace("%24", "$")
    assert set(changes[0]) == {"id", "displayName", "userPrincipalName", "accountEnabled", "userType", "mobilePhone"}
    assert len(graph_env.sim.requests("/users/delta")) == round_.pages


async def test_incremental_round_returns_exactly_the_changes(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=120)
    first = DeltaRound(graph_env.client, USER_SELECT)
    await drain(first)
    renamed, soft, hard = made.members[:3]
    graph_env.tenant.change_user(renamed, displayName="Zoë O'Brien-Renamed")
    graph_env.tenant.soft_delete_user(soft)
    graph_env.tenant.hard_delete_user(hard)
    graph_env.tenant.add_user("00000000-0000-4000-8000-000000000001", displayName="New Hire", userPrincipalName="new@contoso.example", accountEnabled=True, userType="Member")
    assert first.delta_link is not None
    second = DeltaRound(graph_env.client, first.delta_link)
    changes = {c["id"]: c for c in await drain(second)}
    assert set(changes) == {renamed, soft, hard, "00000000-0000-4000-8000-000000000001"}
    assert changes[renamed]["displayName"] == "Zoë O'Brien-Renamed"
    assert is_removed(changes[soft]) == "changed"
    assert is_removed(changes[hard]) == "deleted"
    assert is_removed(changes[renamed]) is None
    assert second.delta_link is not None
    third = DeltaRound(graph_env.client, second.delta_link)
    assert await drain(third) == []


async def test_minimal_responses_carry_only_changed_properties(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=30)
    first = DeltaRound(graph_env.client, USER_SELECT)
    await drain(first)
    graph_env.tenant.change_user(made.members[0], mobilePhone="+1 555 0100 ext. 12")
    assert first.delta_link is not None
    (change,) = await drain(DeltaRound(graph_env.client, first.delta_link, {"Prefer": "return=minimal"}))
    assert change == {"id": made.members[0], "mobilePhone": "+1 555 0100 ext. 12"}


async def test_restored_user_comes_back_whole(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=30)
    first = DeltaRound(graph_env.client, USER_SELECT)
    await drain(first)
    graph_env.tenant.soft_delete_user(made.members[0])
    graph_env.tenant.restore_user(made.members[0])
    assert first.delta_link is not None
    (change,) = await drain(DeltaRound(graph_env.client, first.delta_link, {"Prefer": "return=minimal"}))
    assert "@removed" not in change and "userPrincipalName" in change


async def test_interrupted_round_resumed_from_committed_link_loses_nothing(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=300)
    first = DeltaRound(graph_env.client, USER_SELECT)
    await drain(first)
    committed = first.delta_link
    assert committed is not None
    changed = made.members[:150]
    for user in changed:
        graph_env.tenant.change_user(user, jobTitle="Changed once")
    seen = 0
    async for _ in DeltaRound(graph_env.client, committed):
        seen += 1
        if seen == 40:
            break  # the process dies here; nothing was committed
    late = made.members[150:160]
    for user in late + changed[:5]:
        graph_env.tenant.change_user(user, jobTitle="Changed while down")
    resumed = {c["id"] for c in await drain(DeltaRound(graph_env.client, committed))}
    assert resumed == set(changed) | set(late)


async def test_user_filter_by_ids(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=40)
    wanted = made.members[:3]
    clause = " or ".join(f"id eq '{i}'" for i in wanted)
    changes = await drain(DeltaRound(graph_env.client, f"/users/delta?$filter={clause}&$select=displayName"))
    assert sorted(c["id"] for c in changes) == sorted(wanted)
    too_many = " or ".join(f"id eq '{i:032x}'" for i in range(51))
    with pytest.raises(GraphRequestError, match="At most 50"):
        await drain(DeltaRound(graph_env.client, f"/users/delta?$filter={too_many}"))


async def test_unknown_select_property_is_a_request_error(graph_env: GraphEnv) -> None:
    with pytest.raises(GraphRequestError, match="displayNme"):
        await drain(DeltaRound(graph_env.client, "/users/delta?$select=displayNme"))


def merged_members(changes: list[dict[str, Any]]) -> dict[str, dict[str, str | None]]:
    groups: dict[str, dict[str, str | None]] = {}
    for change in changes:
        members = groups.setdefault(change["id"], {})
        for member in change.get("members@delta", []):
            members[member["id"]] = is_removed(member)
    return groups


async def test_large_group_is_split_across_pages_and_merged(graph_env: GraphEnv) -> None:
    users = [f"00000000-0000-4000-8000-{i:012d}" for i in range(55)]
    for user in users:
        graph_env.tenant.add_user(user, displayName=user)
    graph_env.tenant.add_group("g-big", members=users, displayName="Big")
    graph_env.tenant.add_group("g-small", members=users[:2], displayName="Small")
    round_ = DeltaRound(graph_env.client, "/groups/delta?$filter=id eq 'g-big' or id eq 'g-small'&$select=displayName,members")
    changes = await drain(round_)
    assert round_.pages >= 3
    assert [c["id"] for c in changes].count("g-big") == 3
    merged = merged_members(changes)
    assert set(merged["g-big"]) == set(users) and set(merged["g-small"]) == set(users[:2])


async def test_members_delta_added_and_removed(graph_env: GraphEnv) -> None:
    for user in ("u1", "u2", "u3"):
        graph_env.tenant.add_user(user, displayName=user)
    graph_env.tenant.add_group("g1", members=["u1", "u2"], displayName="G1")
    graph_env.tenant.add_group("g2", members=["u1"], displayName="G2")
    first = DeltaRound(graph_env.client, "/groups/delta?$select=displayName,members")
    await drain(first)
    graph_env.tenant.add_member("g1", "u3")
    graph_env.tenant.remove_member("g1", "u1")
    assert first.delta_link is not None
    changes = await drain(DeltaRound(graph_env.client, first.delta_link))
    assert [c["id"] for c in changes] == ["g1"]
    assert merged_members(changes)["g1"] == {"u3": None, "u1": "deleted"}


async def test_contacts_delta_pages_and_changes(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Owner")
    for index in range(25):
        graph_env.tenant.put_contact("u1", f"c{index:02d}", displayName=f"Contact {index}", mobilePhone=f"+1 555 {index:04d}")
    url = "/users/u1/contactFolders/contacts/contacts/delta"
    first = DeltaRound(graph_env.client, url, {"Prefer": "odata.maxpagesize=10"})
    assert len(await drain(first)) == 25 and first.pages == 3
    graph_env.tenant.put_contact("u1", "c03", displayName="Renamed")
    graph_env.tenant.delete_contact("u1", "c04")
    assert first.delta_link is not None
    changes = {c["id"]: c for c in await drain(DeltaRound(graph_env.client, first.delta_link))}
    assert changes["c03"]["displayName"] == "Renamed"
    assert is_removed(changes["c04"]) == "deleted"
    assert len(changes) == 2


async def test_contact_folders_are_listed_and_a_removed_folder_is_not_found(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Owner")
    graph_env.tenant.add_folder("u1", "f1", "Suppliers")
    graph_env.tenant.put_contact("u1", "c1", folder_id="f1", displayName="Supplier")
    listing = await graph_env.client.get("/users/u1/contactFolders")
    assert [f["id"] for f in listing.body["value"]] == ["f1"]
    assert len(await drain(DeltaRound(graph_env.client, "/users/u1/contactFolders/f1/contacts/delta"))) == 1
    graph_env.tenant.delete_folder("u1", "f1")
    with pytest.raises(GraphNotFound):
        await drain(DeltaRound(graph_env.client, "/users/u1/contactFolders/f1/contacts/delta"))


async def test_calendar_window_is_fixed_by_the_first_request(graph_env: GraphEnv) -> None:
    tenant = graph_env.tenant
    tenant.add_user("u1", displayName="Owner")
    tenant.put_event("u1", "e-in", start={"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "Europe/Berlin"}, end={"dateTime": "2026-12-01T10:00:00.0000000", "timeZone": "Europe/Berlin"}, showAs="busy", isCancelled=False)
    tenant.put_event("u1", "e-out", start={"dateTime": "2027-01-20T09:00:00.0000000", "timeZone": "UTC"}, end={"dateTime": "2027-01-20T10:00:00.0000000", "timeZone": "UTC"}, showAs="busy", isCancelled=False)
    url = "/users/u1/calendarView/delta?startDateTime=2026-11-30T00:00:00Z&endDateTime=2026-12-14T00:00:00Z"
    first = DeltaRound(graph_env.client, url)
    (event,) = await drain(first)
    assert event["id"] == "e-in"
    assert event["start"] == {"dateTime": "2026-12-01T08:00:00.0000000", "timeZone": "UTC"}
    tenant.put_event("u1", "e-in", start={"dateTime": "2027-02-01T09:00:00.0000000", "timeZone": "UTC"}, end={"dateTime": "2027-02-01T10:00:00.0000000", "timeZone": "UTC"})
    tenant.put_event("u1", "e-new", start={"dateTime": "2026-12-02T09:00:00.0000000", "timeZone": "UTC"}, end={"dateTime": "2026-12-02T09:30:00.0000000", "timeZone": "UTC"}, showAs="oof", isCancelled=False)
    assert first.delta_link is not None
    changes = {c["id"]: c for c in await drain(DeltaRound(graph_env.client, first.delta_link))}
    assert is_removed(changes["e-in"]) == "deleted"  # moved out of the window
    assert changes["e-new"]["showAs"] == "oof"
    assert "e-out" not in changes


async def test_calendar_rejects_select(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Owner")
    with pytest.raises(GraphRequestError):
        await drain(DeltaRound(graph_env.client, "/users/u1/calendarView/delta?startDateTime=2026-11-30T00:00:00Z&endDateTime=2026-12-14T00:00:00Z&$select=subject"))


async def completed_users_link(env: GraphEnv) -> str:
    """The deltaLink of a finished initial users round."""
    first = DeltaRound(env.client, USER_SELECT)
    await drain(first)
    assert first.delta_link is not None
    return first.delta_link


@pytest.mark.parametrize("style", ["410", "syncStateNotFound", "resyncRequired"])
async def test_expired_delta_state_raises_delta_expired(graph_env: GraphEnv, style: str) -> None:
    generate_tenant(graph_env.tenant, users=20)
    link = await completed_users_link(graph_env)
    graph_env.sim.api.expire_delta_tokens(style)
    with pytest.raises(DeltaExpired):
        await drain(DeltaRound(graph_env.client, link))


async def test_directory_tokens_expire_after_seven_days(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=5)
    link = await completed_users_link(graph_env)
    graph_env.clock.advance(8 * 24 * 3600)
    with pytest.raises(DeltaExpired):
        await drain(DeltaRound(graph_env.client, link))


async def test_tampered_token_is_delta_expired(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=5)
    link = await completed_users_link(graph_env)
    with pytest.raises(DeltaExpired):
        await drain(DeltaRound(graph_env.client, link[:-6] + "AAAAAA"))


async def test_429_waits_at_least_retry_after_on_the_fake_clock(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=5)
    graph_env.sim.fail_next(429, path_pattern="/users/delta", retry_after=3)
    changes = await drain(DeltaRound(graph_env.client, USER_SELECT))
    assert len(changes) == 5
    attempts = graph_env.sim.requests("/users/delta")
    assert [a.status for a in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 3
    assert graph_env.clock.sleeps == [3.0]
    text = graph_env.metrics.render().decode()
    assert 'm365sync_graph_throttled_total{tenant="t"} 1.0' in text
    assert 'm365sync_graph_requests_total{endpoint="/users/delta",status="429",tenant="t"} 1.0' in text


async def test_retry_after_is_never_shortened_by_backoff(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=5)
    graph_env.sim.fail_next(503, count=2, path_pattern="/users/delta", retry_after=40)
    await drain(DeltaRound(graph_env.client, USER_SELECT))
    assert graph_env.clock.sleeps == [40.0, 40.0]


async def test_5xx_backs_off_then_gives_up_with_a_typed_error(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=5)
    graph_env.sim.fail_next(504, count=10, path_pattern="/users/delta", code="GatewayTimeout")
    with pytest.raises(GraphUnavailable):
        await drain(DeltaRound(graph_env.client, USER_SELECT))
    assert len(graph_env.sim.requests("/users/delta")) == graph_env.client.transport.retry.max_attempts
    delays = graph_env.clock.sleeps
    assert len(delays) == graph_env.client.transport.retry.max_attempts - 1
    assert all(0.5 <= d <= 1 for d in delays[:1]) and delays[1] >= 1 and delays[2] >= 2


async def test_persistent_429_becomes_graph_throttled(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=5)
    graph_env.sim.fail_next(429, count=10, path_pattern="/users/delta", retry_after=1)
    with pytest.raises(GraphThrottled):
        await drain(DeltaRound(graph_env.client, USER_SELECT))


async def test_401_retries_once_with_a_fresh_token(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=5)
    graph_env.client.token_provider = tokens = StaticTokens("stale-token", "sim-access-token")
    assert len(await drain(DeltaRound(graph_env.client, USER_SELECT))) == 5
    assert tokens.refreshes == 1


async def test_401_with_no_good_token_is_authorization_required(graph_env: GraphEnv) -> None:
    graph_env.client.token_provider = StaticTokens("wrong")
    with pytest.raises(AuthorizationRequired):
        await graph_env.client.get("/users/delta")
    assert [r.status for r in graph_env.sim.log] == [401, 401]


async def test_forbidden_mailbox_is_access_denied(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Someone")
    graph_env.sim.api.settings.forbidden_mailboxes.add("u1")
    with pytest.raises(AccessDenied):
        await drain(DeltaRound(graph_env.client, "/users/u1/contactFolders/contacts/contacts/delta"))


async def collect(executor: BatchExecutor, requests: list[BatchRequest]) -> dict[str, BatchResult]:
    return {result.request.key: result async for result in executor.run(requests)}


async def test_batch_mixed_statuses_retries_only_failed_items(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=60, photo_fraction=0.5)
    users = made.members[:30]
    graph_env.sim.fail_next(429, count=3, path_pattern=r"/photo$", retry_after=2, in_batch=True)
    graph_env.sim.fail_next(503, count=1, path_pattern=r"/mailboxSettings$", in_batch=True)
    requests = [BatchRequest(f"photo:{u}", f"/users/{u}/photo", mailbox=u) for u in users]
    requests += [BatchRequest(f"mbx:{u}", f"/users/{u}/mailboxSettings", mailbox=u) for u in users[:5]]
    results = await collect(BatchExecutor(graph_env.client), requests)
    assert set(results) == {r.key for r in requests}
    for user in users:
        result = results[f"photo:{user}"]
        if user in made.with_photo:
            assert result.status == 200 and result.body["@odata.mediaEtag"]
        else:
            assert result.status == 404 and isinstance(result.error, GraphNotFound)
    item_requests = graph_env.sim.requests(r"/photo$|/mailboxSettings$", in_batch=True)
    assert len(item_requests) == len(requests) + 4  # only the 4 failed items went again
    throttled = [r for r in item_requests if r.status == 429]
    assert len(throttled) == 3
    for failure in throttled:
        retry = next(r for r in item_requests if r.path == failure.path and r.at > failure.at)
        assert retry.at - failure.at >= 2  # each item waited its own Retry-After


async def test_batch_binary_bodies_are_decoded(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Pic")
    graph_env.tenant.set_photo("u1", b"\xff\xd8\xffJPEGDATA\xff\xd9")
    results = await collect(BatchExecutor(graph_env.client), [BatchRequest("p", "/users/u1/photos/96x96/$value", mailbox="u1")])
    assert results["p"].body == b"\xff\xd8\xffJPEGDATA\xff\xd9"


async def test_batch_keeps_at_most_four_in_flight_per_mailbox(graph_env: GraphEnv) -> None:
    for user in ("a", "b"):
        graph_env.tenant.add_user(user, displayName=user)
        for index in range(30):
            graph_env.tenant.put_contact(user, f"{user}{index}", displayName="x")
    graph_env.sim.faults.latency = 0.01
    requests = [BatchRequest(f"{u}{i}", f"/users/{u}/mailboxSettings", mailbox=u) for u in ("a", "b") for i in range(30)]
    results = await collect(BatchExecutor(graph_env.client, max_batches_in_flight=4), requests)
    assert len(results) == 60 and all(r.ok for r in results.values())
    assert graph_env.sim.max_mailbox_in_flight == {"a": 4, "b": 4}


async def test_batch_packs_twenty_directory_requests(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=45)
    requests = [BatchRequest(u, f"/users/{u}") for u in made.all_users]
    results = await collect(BatchExecutor(graph_env.client), requests)
    assert len(results) == 45
    assert len(graph_env.sim.requests(r"^/\$batch$")) == 3


def test_endpoint_labels_have_no_ids() -> None:
    assert endpoint_label("https://graph/v1.0/users/abc/contactFolders/f1/contacts/delta?$skiptoken=x") == "/users/{id}/contactFolders/{id}/contacts/delta"
    assert endpoint_label("/users/delta") == "/users/delta"
    assert endpoint_label("/users/u/photos/96x96/$value") == "/users/{id}/photos/{id}/$value"


async def test_photo_etag_changes_with_the_photo_and_404_without_one(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Pic")
    with pytest.raises(GraphNotFound):
        await graph_env.client.get("/users/u1/photo")
    graph_env.tenant.set_photo("u1", b"one")
    first = (await graph_env.client.get("/users/u1/photo")).body["@odata.mediaEtag"]
    graph_env.tenant.set_photo("u1", b"two")
    second = (await graph_env.client.get("/users/u1/photo")).body["@odata.mediaEtag"]
    assert first != second
    assert (await graph_env.client.get("/users/u1/photo/$value")).body == b"two"


async def test_mailbox_settings_purpose_and_users_without_mailbox(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("shared1", mailbox="shared", displayName="Reception")
    graph_env.tenant.add_user("guest1", mailbox=None, displayName="Guest", userType="Guest")
    body = (await graph_env.client.get("/users/shared1/mailboxSettings")).body
    assert body["userPurpose"] == "shared"
    graph_env.sim.api.settings.mailbox_purpose_as_object = True
    assert (await graph_env.client.get("/users/shared1/mailboxSettings")).body["userPurpose"] == {"value": "shared"}
    with pytest.raises(GraphNotFound, match="MailboxNotEnabledForRESTAPI"):
        await graph_env.client.get("/users/guest1/mailboxSettings")


async def test_server_chosen_page_sizes_vary(graph_env: GraphEnv) -> None:
    generate_tenant(graph_env.tenant, users=1000)
    sizes = []
    url: str | None = "/users/delta?$select=displayName"
    while url:
        body = (await graph_env.client.get(url)).body
        sizes.append(len(body["value"]))
        url = body.get("@odata.nextLink")
    assert sum(sizes) == 1000 and len(set(sizes[:-1])) > 1


async def test_a_fraction_of_throttled_requests_still_completes_the_round(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=400)
    graph_env.sim.faults.throttle_fraction = 0.3
    graph_env.sim.faults.retry_after = 5
    changes = await drain(DeltaRound(graph_env.client, USER_SELECT))
    assert len(changes) == len(made.all_users)
    throttled = graph_env.sim.requests("/users/delta")
    assert any(r.status == 429 for r in throttled)
    assert all(s >= 5 for s in graph_env.clock.sleeps)


async def test_executors_of_one_tenant_share_the_per_mailbox_budget(graph_env: GraphEnv) -> None:
    """A sync run and a calendar poll at once still keep 4 in flight per mailbox."""
    import asyncio

    from daemon.retry import GraphBudget

    graph_env.tenant.add_user("a", displayName="a")
    graph_env.sim.faults.latency = 0.01
    graph_env.client.transport.budget = GraphBudget()
    requests = [BatchRequest(f"r{i}", "/users/a/mailboxSettings", mailbox="a") for i in range(12)]
    first, second = await asyncio.gather(collect(BatchExecutor(graph_env.client), requests[:6]),
                                         collect(BatchExecutor(graph_env.client), requests[6:]))
    assert len(first) == 6 and len(second) == 6
    assert graph_env.sim.max_mailbox_in_flight == {"a": 4}
    assert graph_env.client.transport.budget.in_flight["a"] == 0 and graph_env.client.transport.budget.batches == 0
