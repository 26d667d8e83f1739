"""Entra groups as dialable PBX groups: numbers, members, membership PATCHes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from daemon.pbx.schema import PBX_GROUP
from daemon.pbx.types import PbxOperation, PbxOutcome
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)

SALES = "11111111-0000-4000-8000-00000000000a"
SUPPORT = "11111111-0000-4000-8000-00000000000b"
GHOST = "11111111-0000-4000-8000-00000000000c"


def add_users(env: SyncEnv, count: int) -> list[str]:
    ids = []
    for index in range(1, count + 1):
        user_id = f"00000000-0000-4000-8000-{index:012d}"
        env.graph.tenant.add_user(user_id, displayName=f"User {index}", userPrincipalName=f"user{index:03d}@contoso.example",
                                  accountEnabled=True, userType="Member")
        ids.append(user_id)
    return ids


async def members(env: SyncEnv, group: str) -> set[str]:
    users = {u["id"]: external for external, u in (await env.pbx_users()).items()}
    return {users[m["value"]] for m in (await env.pbx_groups())[group].get("members", [])}


async def test_groups_become_pbx_groups_with_synced_members(sync_env: SyncEnv) -> None:
    ids = add_users(sync_env, 6)
    guest = "00000000-0000-4000-8000-0000000000ff"
    sync_env.graph.tenant.add_user(guest, displayName="Guest", userPrincipalName="g#EXT#@contoso.example", userType="Guest", accountEnabled=True)
    sync_env.graph.tenant.add_group(SALES, members=[ids[0], ids[1], guest], displayName="Sales", mail="sales@contoso.example")
    sync_env.graph.tenant.add_group(SUPPORT, members=[ids[2]], displayName="Support")
    sync_env.configure(groups=[SALES, SUPPORT, GHOST], groups_starting_extension_number="2000")
    report = await sync_env.run()
    assert report.groups.counts == {"create": 2}
    assert report.groups.missing == [GHOST]
    groups = await sync_env.pbx_groups()
    assert set(groups) == {SALES, SUPPORT}
    assert sorted(g[PBX_GROUP]["extensionNumber"] for g in groups.values()) == ["2000", "2001"]
    assert groups[SALES][PBX_GROUP]["email"] == "sales@contoso.example" and groups[SALES]["displayName"] == "Sales"
    assert await members(sync_env, SALES) == {ids[0], ids[1]}  # the guest is not a synced user
    writes = sync_env.pbx_writes()
    assert (await sync_env.run()).groups.counts == {}
    assert sync_env.pbx_writes() == writes


async def test_membership_change_is_a_member_only_patch(sync_env: SyncEnv) -> None:
    ids = add_users(sync_env, 4)
    sync_env.graph.tenant.add_group(SALES, members=[ids[0], ids[1]], displayName="Sales")
    sync_env.configure(groups=[SALES], groups_starting_extension_number="2000")
    await sync_env.run()
    sync_env.graph.tenant.add_member(SALES, ids[2])
    sync_env.graph.tenant.remove_member(SALES, ids[0])
    from daemon.pbx.client import PbxClient

    class Recorder(PbxClient):
        applied: list[PbxOperation] = []

        async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
            async for outcome in super().execute_many(operations):
                if outcome.ok:
                    self.applied.append(outcome.operation)
                yield outcome

    recorder = Recorder(sync_env.pbx.client.transport, sync_env.pbx.client.base_url, sync_env.pbx.client._token)
    report = await sync_env.run(writer=recorder)
    assert report.groups.counts == {"update": 1} and report.counts == {}
    (operation,) = recorder.applied
    assert operation.kind == "Group"
    assert [(op["op"], op["path"]) for op in operation.operations] == [
        ("add", "members"), ("remove", f'members[value eq "{(await sync_env.pbx_users())[ids[0]]["id"]}"]')]
    assert await members(sync_env, SALES) == {ids[1], ids[2]}


async def test_group_numbers_never_collide_with_user_numbers(sync_env: SyncEnv) -> None:
    add_users(sync_env, 3)  # users get 1001-1003
    sync_env.graph.tenant.add_group(SALES, members=[], displayName="Sales")
    sync_env.configure(groups=[SALES], groups_starting_extension_number="1002")
    await sync_env.run()
    assert (await sync_env.pbx_groups())[SALES][PBX_GROUP]["extensionNumber"] == "1004"


async def test_removed_or_unconfigured_group_is_deleted_and_include_scope_follows(sync_env: SyncEnv) -> None:
    ids = add_users(sync_env, 3)
    sync_env.graph.tenant.add_group(SALES, members=[ids[0]], displayName="Sales")
    sync_env.configure(groups=[SALES], groups_starting_extension_number="2000", users={"sync_type": "INCLUDE"})
    await sync_env.run()
    assert set(await sync_env.pbx_users()) == {ids[0]}
    sync_env.configure(groups=[], groups_starting_extension_number="2000", users={"sync_type": "INCLUDE", "selected_users": [ids[1]]})
    report = await sync_env.run()
    assert report.groups.counts == {"delete": 1} and report.counts == {"create": 1, "disable": 1}
    assert await sync_env.pbx_groups() == {}
    users = await sync_env.pbx_users()
    assert users[ids[0]]["active"] is False and users[ids[1]]["active"] is True


async def test_nested_groups_count_only_with_groups_transitive(sync_env: SyncEnv) -> None:
    ids = add_users(sync_env, 4)
    nested = "11111111-0000-4000-8000-00000000000d"
    sync_env.graph.tenant.add_group(nested, members=[ids[2], ids[3]], displayName="Sales EMEA")
    sync_env.graph.tenant.add_group(SALES, members=[ids[0], nested], displayName="Sales")
    sync_env.configure(groups=[SALES], groups_starting_extension_number="2000")
    await sync_env.run()
    assert await members(sync_env, SALES) == {ids[0]}
    sync_env.configure(groups=[SALES], groups_starting_extension_number="2000", groups_transitive=True)
    report = await sync_env.run()
    assert report.groups.counts == {"update": 1}
    assert await members(sync_env, SALES) == {ids[0], ids[2], ids[3]}
    sync_env.graph.tenant.remove_member(nested, ids[3])
    await sync_env.run()
    assert await members(sync_env, SALES) == {ids[0], ids[2]}
    sync_env.configure(groups=[SALES], groups_starting_extension_number="2000")  # back to direct members
    await sync_env.run()
    assert await members(sync_env, SALES) == {ids[0]}
