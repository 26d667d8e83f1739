"""Each object's history of applied writes: what happened, when and why, on
both state backends; kept for ``[state] history_days``."""

from __future__ import annotations

import aiohttp

from daemon.history_view import history_lines, object_history
from daemon.logging import bind, unbind
from live_fixtures import ADMIN_TOKEN, LiveEnv, scheduled_service
from state.history import DAY_SECONDS, HistoryEntry
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)
from test_contact_sync import add_user


async def run_as(env: SyncEnv, run_id: str) -> None:
    """One sync run, its id bound as the runner binds it."""
    bind(tenant="t", run_id=run_id)
    try:
        report = await env.run()
    finally:
        unbind("tenant", "run_id")
    assert report.result == "success", report.failures
    env.graph.clock.advance(3600)


async def test_created_renamed_disabled_deleted_is_four_entries_in_order(sync_env: SyncEnv) -> None:
    user = add_user(sync_env, 1, displayName="Alice Smith")
    await run_as(sync_env, "run-1")
    sync_env.graph.tenant.change_user(user, displayName="Alice Jones")
    await run_as(sync_env, "run-2")
    sync_env.graph.tenant.change_user(user, accountEnabled=False)
    await run_as(sync_env, "run-3")
    sync_env.graph.tenant.hard_delete_user(user)
    await run_as(sync_env, "run-4")

    found = await object_history(sync_env.sync_store, "t", "user001@contoso.example")  # its copy is gone: found by name
    assert found is not None and (found.kind, found.graph_id) == ("user", user)
    entries = found.entries
    assert [(e.action, e.run_id) for e in entries] == [
        ("create", "run-1"), ("update", "run-2"), ("disable", "run-3"), ("delete", "run-4")]
    assert [e.at for e in entries] == sorted(e.at for e in entries) and len({e.at for e in entries}) == 4
    create, rename, disable, delete = entries
    assert {"displayName", "userName", "extensionNumber", "active"} <= set(create.attributes)
    assert create.values == {"displayName": "Alice Smith", "userName": "user001@contoso.example",
                             "extensionNumber": "1001"}
    assert "displayName" in rename.attributes and rename.values["displayName"] == "Alice Jones"
    assert "userName" not in rename.values  # values only of what changed
    assert disable.attributes == ("active",) and disable.values == {} and disable.reason
    assert delete.attributes == () and delete.reason
    lines = history_lines(entries)
    assert "create" in lines[0] and "displayName=Alice Smith" in lines[0] and "run run-1" in lines[0]
    assert "[" in lines[1] and "displayName=Alice Jones" in lines[1]


async def test_entries_older_than_the_retention_are_pruned(sync_env: SyncEnv) -> None:
    store = sync_env.sync_store
    await store.apply_bookkeeping("t", [], [HistoryEntry("user", "old", "create", ("displayName",))])
    sync_env.graph.clock.advance(store.history_days * DAY_SECONDS - 60)
    await store.apply_bookkeeping("t", [], [HistoryEntry("user", "recent", "create", ("displayName",))])
    sync_env.graph.clock.advance(120)  # "old" is now past history_days, "recent" is not
    assert await store.prune_history() == 1
    assert await store.history("t", "user", "old") == []
    assert [e.action for e in await store.history("t", "user", "recent")] == ["create"]


async def test_history_cli_explain_and_api_answer_what_happened(live_env: LiveEnv) -> None:
    user = "00000000-0000-4000-8000-0000000000b0"
    live_env.tenant.add_user(user, displayName="Bob", userPrincipalName="bob@contoso.example", accountEnabled=True,
                             userType="Member")
    assert (await live_env.sync())[0] == 0
    live_env.tenant.change_user(user, displayName="Robert")
    assert (await live_env.sync())[0] == 0
    code, out, _ = await live_env.m365sync("history", "--tenant", "contoso", "bob@contoso.example")
    assert code == 0 and "user bob@contoso.example" in out and "2 write(s) in the last 30 days" in out
    assert out.index("create") < out.index("update") and "displayName=Robert" in out and "run " in out
    code, out, _ = await live_env.m365sync("explain", "--tenant", "contoso", "bob@contoso.example")
    assert code == 0 and "history (last 5" in out and "displayName=Bob" in out and "displayName=Robert" in out
    code, out, _ = await live_env.m365sync("history", "--tenant", "contoso", "nobody@contoso.example")
    assert code == 1 and "no such user or group" in out
    async with scheduled_service(live_env) as service, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{service.bound_port}/api/tenants/contoso/history/bob@contoso.example"
        async with session.get(url) as response:
            assert response.status == 401
        async with session.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert response.status == 200
            body = await response.json()
        async with session.get(url.replace("bob@", "nobody@"), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert response.status == 404
    assert body["id"] == user and [e["action"] for e in body["entries"]][:2] == ["create", "update"]
    assert body["entries"][1]["values"] == {"displayName": "Robert"} and "displayName" in body["entries"][1]["attributes"]
