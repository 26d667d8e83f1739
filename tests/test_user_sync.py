"""The user engine, black-box: the Graph simulator in, a real SCIM server out."""

from __future__ import annotations

import pytest

from sim.generator import generate_tenant
from sync_fixtures import SyncEnv, add_user, number, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)


async def test_initial_sync_creates_enabled_members_numbered_in_upn_order(sync_env: SyncEnv) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=60, photo_fraction=0)
    report = await sync_env.run()
    assert report.result == "success", report.failures
    users = await sync_env.pbx_users()
    assert set(users) == set(made.members)  # no guests, no disabled accounts, no shared/rooms
    by_upn = sorted(users.values(), key=lambda u: u["userName"].lower())
    assert [number(u) for u in by_upn] == [str(1001 + i) for i in range(len(by_upn))]
    assert all(u["active"] for u in users.values())
    assert report.counts == {"create": len(made.members)}


async def test_second_run_without_changes_reads_one_delta_page_and_writes_nothing(sync_env: SyncEnv) -> None:
    generate_tenant(sync_env.graph.tenant, users=40, photo_fraction=0)
    await sync_env.run()
    writes, deltas = sync_env.pbx_writes(), sync_env.graph_requests("/users/delta")
    report = await sync_env.run()
    assert report.counts == {} and report.result == "success"
    assert sync_env.pbx_writes() == writes
    assert sync_env.graph_requests("/users/delta") == deltas + 1


async def test_guests_only_with_sync_guest_users(sync_env: SyncEnv) -> None:
    member = add_user(sync_env, 1)
    guest = add_user(sync_env, 2, userType="Guest", userPrincipalName="g_fabrikam.example#EXT#@contoso.example")
    await sync_env.run()
    assert set(await sync_env.pbx_users()) == {member}
    sync_env.configure(users={"sync_guest_users": True})
    await sync_env.run()
    assert set(await sync_env.pbx_users()) == {member, guest}


async def test_include_selected_users_and_group_members_and_unmatched_entries(sync_env: SyncEnv) -> None:
    ids = [add_user(sync_env, i) for i in range(1, 7)]
    sync_env.graph.tenant.add_group("11111111-0000-4000-8000-00000000000a", members=[ids[4]], displayName="Sales")
    sync_env.configure(
        groups=["11111111-0000-4000-8000-00000000000a"],
        users={"sync_type": "INCLUDE", "selected_users": ["USER001@Contoso.Example", ids[1], "nobody@contoso.example"]},
    )
    report = await sync_env.run()
    assert set(await sync_env.pbx_users()) == {ids[0], ids[1], ids[4]}
    assert report.unmatched_selected == ["nobody@contoso.example"]


async def test_exclude_and_all(sync_env: SyncEnv) -> None:
    ids = [add_user(sync_env, i) for i in range(1, 4)]
    sync_env.configure(users={"sync_type": "EXCLUDE", "selected_users": ["user002@contoso.example"]})
    await sync_env.run()
    assert set(await sync_env.pbx_users()) == {ids[0], ids[2]}
    sync_env.configure(users={"sync_type": "ALL", "selected_users": ["user002@contoso.example"]})
    await sync_env.run()
    assert set(await sync_env.pbx_users()) == set(ids)


async def test_users_disabled_setting_touches_nothing(sync_env: SyncEnv) -> None:
    first = add_user(sync_env, 1)
    await sync_env.run()
    sync_env.configure(users={"enabled": False})
    sync_env.graph.tenant.change_user(first, displayName="Changed")
    sync_env.graph.tenant.hard_delete_user(first)
    add_user(sync_env, 2)
    writes = sync_env.pbx_writes()
    report = await sync_env.run()
    assert sync_env.pbx_writes() == writes and report.counts == {}
    assert set(await sync_env.pbx_users()) == {first}


async def test_numbers_skip_pbx_numbers_and_survive_renames_disable_and_start_changes(sync_env: SyncEnv) -> None:
    from daemon.pbx.client import PbxOperation
    from daemon.pbx.mapping import user_payload

    manual = user_payload({"id": "manual", "userPrincipalName": "frontdesk@contoso.example"}, extension_number="1002",
                          active=True, sign_in_as_administrator=False, sign_in_as_standard_user=False)
    assert (await sync_env.pbx.client.execute(PbxOperation("create", "User", "manual", payload=manual))).ok
    a, b, c = (add_user(sync_env, i) for i in (1, 2, 3))
    await sync_env.run()
    numbers = {k: number(v) for k, v in (await sync_env.pbx_users()).items() if k != "manual"}
    assert numbers == {a: "1001", b: "1003", c: "1004"}
    sync_env.graph.tenant.change_user(a, userPrincipalName="renamed@contoso.example", displayName="Renamed")
    sync_env.graph.tenant.change_user(b, accountEnabled=False)
    sync_env.configure(users={"starting_extension_number": "5000"})
    await sync_env.run()
    sync_env.graph.tenant.change_user(b, accountEnabled=True)
    d = add_user(sync_env, 4)
    await sync_env.run()
    users = await sync_env.pbx_users()
    assert {k: number(users[k]) for k in (a, b, c, d)} == {a: "1001", b: "1003", c: "1004", d: "5000"}
    assert users[a]["userName"] == "renamed@contoso.example" and users[b]["active"] is True


async def test_thirteen_digit_bound_and_range_exhaustion(sync_env: SyncEnv) -> None:
    ids = [add_user(sync_env, i) for i in range(1, 5)]
    sync_env.configure(users={"starting_extension_number": "9999999999998"})
    report = await sync_env.run()
    users = await sync_env.pbx_users()
    assert sorted(number(u) for u in users.values()) == ["9999999999998", "9999999999999"]
    assert report.result == "partial" and len(report.failures) == 2
    assert all("no free extension number left" in f for f in report.failures)
    assert set(users) == set(ids[:2])  # deterministic: the first UPNs got the numbers
    # recorded as failed, so their retry time brings them back without waiting for a full plan
    failed = await sync_env.sync_store.failed_objects("t", "user")
    assert sorted(graph_id for graph_id, _, _ in failed) == sorted(ids[2:])
    sync_env.graph.clock.advance(max(retry_at for _, retry_at, _ in failed) - sync_env.graph.clock.time() + 1)
    again = await sync_env.run()
    assert len(again.failures) == 2 and all("no free extension number left" in f for f in again.failures)
    assert all(row.failures == 2 for graph_id, row in (await sync_env.sync_store.synced_rows("t", "user")).items()
               if graph_id in ids[2:])


async def test_sso_flags_for_each_combination(sync_env: SyncEnv) -> None:
    admin, everyone, excluded = (add_user(sync_env, i) for i in (1, 2, 3))
    cases = [
        ({"enabled": False}, {"enabled": False}, {admin: (False, False), everyone: (False, False)}),
        ({"enabled": True, "selected_users": ["user001@contoso.example"]}, {"enabled": False},
         {admin: (True, False), everyone: (False, False)}),
        ({"enabled": False}, {"enabled": True, "sync_type": "ALL"}, {admin: (False, True), everyone: (False, True)}),
        ({"enabled": True, "selected_users": ["user001@contoso.example"]},
         {"enabled": True, "sync_type": "EXCLUDE", "selected_users": ["user003@contoso.example"]},
         {admin: (True, True), everyone: (False, True), excluded: (False, False)}),
        ({"enabled": False}, {"enabled": True, "sync_type": "INCLUDE", "selected_users": ["user002@contoso.example"]},
         {admin: (False, False), everyone: (False, True), excluded: (False, False)}),
    ]
    from daemon.pbx.schema import PBX_USER

    for admin_section, standard_section, expected in cases:
        sync_env.configure(sign_in_as_administrator=admin_section, sign_in_as_standard_user=standard_section)
        await sync_env.run()
        users = await sync_env.pbx_users()
        for user_id, (is_admin, is_standard) in expected.items():
            flags = users[user_id][PBX_USER]
            assert (flags["signInAsAdministrator"], flags["signInAsStandardUser"]) == (is_admin, is_standard)


async def test_photos_added_unchanged_changed_and_removed(sync_env: SyncEnv) -> None:
    with_photo, without = add_user(sync_env, 1), add_user(sync_env, 2)
    sync_env.graph.tenant.set_photo(with_photo, b"\xff\xd8\xffONE")
    sync_env.configure(users={"sync_photo": True, "photo_check_hours": 0})  # checked every run
    await sync_env.run()
    users = await sync_env.pbx_users()
    assert users[with_photo]["photos"][0]["value"].startswith("data:image/jpeg;base64,")
    assert "photos" not in users[without]
    bytes_requests = sync_env.graph_requests(r"/photos/96x96/\$value")
    assert bytes_requests == 1  # only the user with a photo cost a download
    writes = sync_env.pbx_writes()
    await sync_env.run()  # unchanged: metadata checked again, nothing downloaded or written
    assert sync_env.pbx_writes() == writes
    assert sync_env.graph_requests(r"/photos/96x96/\$value") == bytes_requests
    sync_env.graph.tenant.set_photo(with_photo, b"\xff\xd8\xffTWO")
    await sync_env.run()
    import base64

    changed = (await sync_env.pbx_users())[with_photo]["photos"][0]["value"]
    assert base64.b64decode(changed.split(",", 1)[1]) == b"\xff\xd8\xffTWO"
    sync_env.graph.tenant.set_photo(with_photo, None)
    await sync_env.run()
    assert "photos" not in (await sync_env.pbx_users())[with_photo]


async def test_a_photo_smaller_than_the_configured_size_is_sent_as_uploaded(sync_env: SyncEnv) -> None:
    small = add_user(sync_env, 1)
    sync_env.graph.tenant.set_photo(small, b"\xff\xd8\xffSMALL")
    sync_env.graph.tenant.photos[small].width = sync_env.graph.tenant.photos[small].height = 64  # Graph: 96x96 is 404
    sync_env.configure(users={"sync_photo": True, "photo_check_hours": 0})
    await sync_env.run()
    assert [r.status for r in sync_env.graph.sim.requests(r"/photos/96x96/\$value")] == [404]
    import base64

    sent = (await sync_env.pbx_users())[small]["photos"][0]["value"]
    assert base64.b64decode(sent.split(",", 1)[1]) == b"\xff\xd8\xffSMALL"


async def test_photo_checks_are_spread_over_the_day_unless_all_are_asked_for(sync_env: SyncEnv) -> None:
    from daemon.sync.tenant import build_tenant_sync

    users = [add_user(sync_env, i) for i in range(1, 41)]
    for user in users:
        sync_env.graph.tenant.set_photo(user, b"\xff\xd8\xffONE")
    sync_env.configure(users={"sync_photo": True})  # photo_check_hours = 24
    await sync_env.run()
    checks = sync_env.graph_requests(r"^/users/[^/]+/photo$")
    assert checks == 40  # new users: every photo checked once
    await sync_env.run()
    assert sync_env.graph_requests(r"^/users/[^/]+/photo$") == checks  # none due yet
    sync_env.graph.clock.advance(18 * 3600)  # some are due after 12 h, all after 24 h
    await sync_env.run()
    due = sync_env.graph_requests(r"^/users/[^/]+/photo$") - checks
    assert 0 < due < 40
    sync_env.graph.tenant.set_photo(users[0], b"\xff\xd8\xffTWO")
    client = sync_env.pbx.client
    before = sync_env.graph_requests(r"^/users/[^/]+/photo$")
    await build_tenant_sync(sync_env.tenant, sync_env.store, sync_env.sync_store, sync_env.graph.client, client, client,
                            sync_env.graph.clock.time, all_photos=True).run()  # sync --photos
    assert sync_env.graph_requests(r"^/users/[^/]+/photo$") == before + 40
    import base64

    changed = (await sync_env.pbx_users())[users[0]]["photos"][0]["value"]
    assert base64.b64decode(changed.split(",", 1)[1]) == b"\xff\xd8\xffTWO"


DAY = 86400


async def test_disable_soft_delete_restore_and_hard_delete(sync_env: SyncEnv) -> None:
    disabled, soft, hard, keep = (add_user(sync_env, i) for i in (1, 2, 3, 4))
    await sync_env.run()
    before = {k: number(v) for k, v in (await sync_env.pbx_users()).items()}
    tenant = sync_env.graph.tenant
    tenant.change_user(disabled, accountEnabled=False)
    tenant.soft_delete_user(soft)
    tenant.hard_delete_user(hard)
    report = await sync_env.run()
    assert report.counts == {"disable": 2, "delete": 1}
    users = await sync_env.pbx_users()
    assert set(users) == {disabled, soft, keep}
    assert users[disabled]["active"] is False and users[soft]["active"] is False and users[keep]["active"] is True
    assert number(users[disabled]) == before[disabled] and number(users[soft]) == before[soft]
    tenant.restore_user(soft)
    tenant.change_user(disabled, accountEnabled=True)
    report = await sync_env.run()
    assert report.counts == {"enable": 2}
    users = await sync_env.pbx_users()
    assert users[soft]["active"] is True and number(users[soft]) == before[soft]
    newcomer = add_user(sync_env, 5)
    await sync_env.run()
    assert number((await sync_env.pbx_users())[newcomer]) == "1005"  # 1003 (deleted) is cooling down


async def test_released_numbers_return_after_the_cooldown(sync_env: SyncEnv) -> None:
    a, b = add_user(sync_env, 1), add_user(sync_env, 2)
    sync_env.configure(users={"extension_reuse_days": 10})
    await sync_env.run()
    sync_env.graph.tenant.hard_delete_user(a)
    await sync_env.run()
    sync_env.graph.clock.advance(11 * DAY)
    c = add_user(sync_env, 3)
    await sync_env.run()
    users = await sync_env.pbx_users()
    assert number(users[c]) == "1001" and number(users[b]) == "1002"


async def test_out_of_scope_is_disabled_then_deleted_after_delete_after_days(sync_env: SyncEnv) -> None:
    a, b = add_user(sync_env, 1), add_user(sync_env, 2)
    await sync_env.run()
    sync_env.configure(users={"sync_type": "EXCLUDE", "selected_users": ["user001@contoso.example"], "delete_after_days": 30})
    report = await sync_env.run()
    assert report.counts == {"disable": 1}
    assert (await sync_env.pbx_users())[a]["active"] is False
    sync_env.graph.clock.advance(29 * DAY)
    assert (await sync_env.run()).counts == {}
    sync_env.graph.clock.advance(2 * DAY)
    assert (await sync_env.run()).counts == {"delete": 1}
    assert set(await sync_env.pbx_users()) == {b}


async def test_delete_after_days_zero_never_deletes(sync_env: SyncEnv) -> None:
    a = add_user(sync_env, 1)
    await sync_env.run()
    sync_env.configure(users={"sync_type": "INCLUDE", "delete_after_days": 0})
    await sync_env.run()
    sync_env.graph.clock.advance(400 * DAY)
    await sync_env.run()
    assert (await sync_env.pbx_users())[a]["active"] is False


async def test_mass_deletion_guard_holds_then_approve_releases_exactly_the_held_set(sync_env: SyncEnv) -> None:
    ids = [add_user(sync_env, i) for i in range(1, 31)]
    sync_env.configure(users={"max_deprovisions_per_run": 5})
    await sync_env.run()
    for user_id in ids[:8]:
        sync_env.graph.tenant.hard_delete_user(user_id)
    newcomer = add_user(sync_env, 40)
    sync_env.graph.tenant.change_user(ids[20], displayName="Still updated")
    report = await sync_env.run()
    assert report.result == "deprovisions_held" and len(report.held) == 8
    assert report.counts == {"create": 1, "update": 1}
    users = await sync_env.pbx_users()
    assert set(ids[:8]) <= set(users) and newcomer in users
    assert (await sync_env.run()).result == "deprovisions_held"  # still held without approval
    assert await sync_env.sync_store.approve_held("t") == 8
    sync_env.graph.tenant.hard_delete_user(ids[9])  # a new deprovision, under the threshold on its own
    report = await sync_env.run()
    assert report.result == "success" and report.counts == {"delete": 9}
    assert not (set(ids[:8]) | {ids[9]}) & set(await sync_env.pbx_users())
    assert await sync_env.sync_store.held("t") == {}


async def test_default_guard_threshold_is_twenty_or_ten_percent(sync_env: SyncEnv) -> None:
    from daemon.sync.guard import threshold

    assert threshold(sync_env.tenant, "user", 50) == 20
    assert threshold(sync_env.tenant, "user", 1000) == 100
    assert threshold(sync_env.tenant, "group", 10) == 5 and threshold(sync_env.tenant, "contact", 5000) == 500


async def test_settings_change_replans_untouched_users(sync_env: SyncEnv) -> None:
    ids = [add_user(sync_env, i) for i in range(1, 6)]
    await sync_env.run()
    deltas = sync_env.graph_requests("/users/delta")
    sync_env.configure(sign_in_as_standard_user={"enabled": True})
    report = await sync_env.run()
    assert report.counts == {"update": 5}
    assert sync_env.graph_requests("/users/delta") == deltas + 1  # no full Graph resync
    from daemon.pbx.schema import PBX_USER

    users = await sync_env.pbx_users()
    assert all(users[i][PBX_USER]["signInAsStandardUser"] for i in ids)


async def test_delta_expired_runs_a_full_round_and_reconciles(sync_env: SyncEnv) -> None:
    ids = [add_user(sync_env, i) for i in range(1, 6)]
    await sync_env.run()
    sync_env.graph.sim.api.expire_delta_tokens("410")
    # Deleted while our token expired: a full round simply no longer returns it.
    sync_env.graph.tenant.users.records.pop(ids[0])
    sync_env.graph.tenant.users._ids.remove(ids[0])
    report = await sync_env.run()
    assert report.full_round and report.reconciled == 1
    assert report.counts == {"disable": 1}
    assert (await sync_env.pbx_users())[ids[0]]["active"] is False
    assert (await sync_env.run()).counts == {}


async def test_failing_user_is_retried_then_quarantined_until_it_changes(sync_env: SyncEnv) -> None:
    from daemon.pbx.client import PbxOperation
    from daemon.pbx.mapping import user_payload
    from state.pushed import retry_delay

    taken = user_payload({"id": "someone-else", "userPrincipalName": "user001@contoso.example"}, extension_number="7777",
                         active=True, sign_in_as_administrator=False, sign_in_as_standard_user=False)
    assert (await sync_env.pbx.client.execute(PbxOperation("create", "User", "someone-else", payload=taken))).ok
    clash = add_user(sync_env, 1)
    add_user(sync_env, 2)
    for attempt in range(5):
        report = await sync_env.run()
        assert report.counts.get("failed") == 1, attempt
        assert "linked to another directory object" in report.failures[0]
        if attempt < 4:  # unchanged, it waits out its backoff (1 h, doubling) before the next try
            writes = sync_env.pbx_writes()
            sync_env.graph.clock.advance(retry_delay(attempt + 1) - 1)
            assert (await sync_env.run()).counts == {"waiting": 1} and sync_env.pbx_writes() == writes
            sync_env.graph.clock.advance(1)
    writes = sync_env.pbx_writes()
    report = await sync_env.run()
    assert report.counts == {"quarantined": 1} and sync_env.pbx_writes() == writes
    assert await sync_env.sync_store.quarantined("t") == [("user", clash, report_error(await sync_env.sync_store.synced("t", "user", clash)))]
    sync_env.graph.tenant.change_user(clash, userPrincipalName="user001b@contoso.example")
    report = await sync_env.run()
    assert report.counts == {"create": 1}
    assert [retry_delay(n) / 3600 for n in range(1, 8)] == [1, 2, 4, 8, 16, 24, 24]


def report_error(row: object) -> str | None:
    return getattr(row, "last_error", None)


async def test_unchanged_inputs_skip_building_payloads_but_a_scope_change_is_not_skipped(
        sync_env: SyncEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The input hash covers what the copy's text does not: here group membership, which makes
    a user inactive without a change to the user."""
    from daemon.sync import plan_users

    ids = [add_user(sync_env, i) for i in range(1, 5)]
    group = "11111111-0000-4000-8000-00000000000b"
    sync_env.graph.tenant.add_group(group, members=ids, displayName="Phones")
    sync_env.configure(groups=[group], users={"sync_type": "INCLUDE", "delete_after_days": 0})
    await sync_env.run()
    built: list[str] = []
    real = plan_users.user_payload
    monkeypatch.setattr(plan_users, "user_payload", lambda data, **kw: built.append(str(data["id"])) or real(data, **kw))
    report = await sync_env.run()
    assert report.counts == {} and built == []  # nothing changed: no payload built, none compared
    sync_env.graph.tenant.remove_member(group, ids[0])
    report = await sync_env.run()
    assert report.counts == {"disable": 1} and built == [ids[0]]
    assert (await sync_env.pbx_users())[ids[0]]["active"] is False
    built.clear()
    assert (await sync_env.run()).counts == {} and built == []
