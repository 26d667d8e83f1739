"""Teams presence to the PBX's ``pbx:presence``: a change lands on the next
poll, an unchanged presence writes nothing, turning presence off removes it,
a poll asks Graph once per 650 users (a few calls at once) and writes in
small /Bulk requests, and a missing permission is warned about once per
change (status shows it meanwhile)."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import Any, cast

import structlog

from daemon.graph.client import GraphClient
from daemon.pbx.schema import PBX_USER
from daemon.status import TenantReport, as_text
from daemon.sync.kinds import PRESENCE_KINDS, RUN_KINDS, Clients, PresenceClearing, build_pipelines
from daemon.sync.presence import (
    IDS_PER_CALL,
    READS_IN_FLIGHT,
    WRITE_CHUNK,
    PresenceSync,
    parse_presences,
    presence_denied,
    read_presences,
)
from daemon.sync.report import RunReport
from sync_fixtures import SyncEnv, add_user, on_both_backends  # noqa: F401  (every test here runs on both backends)
from test_kinds_turned_off import directory_run

PRESENCE_CALL = r"^/communications/getPresencesByUserId$"


async def presence_poll(env: SyncEnv) -> RunReport:
    """A presence poll as the daemon builds it (the one factory)."""
    clients = Clients(env.graph.client, env.pbx.client, env.pbx.client)
    (pipeline,) = build_pipelines(PRESENCE_KINDS, env.tenant, env.store, env.sync_store, clients, env.graph.clock.time)
    return await pipeline.run()


async def on_pbx(env: SyncEnv) -> dict[str, Any]:
    """Each PBX user's ``pbx:presence`` (None where it has none)."""
    return {external: data.get(PBX_USER, {}).get("presence") for external, data in (await env.pbx_users()).items()}


async def setup(env: SyncEnv, users: int) -> list[str]:
    ids = [add_user(env, index) for index in range(1, users + 1)]
    env.configure(presence={"enabled": True})
    await directory_run(env)
    return ids


async def test_a_presence_change_lands_on_the_next_poll(sync_env: SyncEnv) -> None:
    alice, bob, carol = await setup(sync_env, 3)
    sync_env.graph.sim.api.presence.set(alice, "Busy", "InACall")
    sync_env.graph.sim.api.presence.set(bob, "DoNotDisturb", "Presenting")
    report = await presence_poll(sync_env)
    assert await on_pbx(sync_env) == {
        alice: {"availability": "Busy", "activity": "InACall"},
        bob: {"availability": "DoNotDisturb", "activity": "Presenting"},
        carol: {"availability": "PresenceUnknown", "activity": "PresenceUnknown"},  # never set: Graph says unknown
    }
    assert report.presence.counts == {"update": 3} and report.presence.requests == 1 and report.failures == []
    sync_env.graph.sim.api.presence.set(alice, "Available", "Available")  # the call ended
    report = await presence_poll(sync_env)
    assert (await on_pbx(sync_env))[alice] == {"availability": "Available", "activity": "Available"}
    assert report.presence.counts == {"update": 1}  # only alice changed
    assert await sync_env.sync_store.presence_states("t") == {
        alice: ("Available", "Available"), bob: ("DoNotDisturb", "Presenting"),
        carol: ("PresenceUnknown", "PresenceUnknown")}


async def test_an_unchanged_presence_writes_nothing(sync_env: SyncEnv) -> None:
    (alice,) = await setup(sync_env, 1)
    sync_env.graph.sim.api.presence.set(alice, "Away", "Away")
    await presence_poll(sync_env)
    writes = sync_env.pbx_writes()
    for _ in range(3):
        report = await presence_poll(sync_env)
        assert report.presence.written == 0 and report.presence.requests == 1
    assert sync_env.pbx_writes() == writes  # three polls, no PBX request that writes
    assert sync_env.graph_requests(PRESENCE_CALL) == 4


async def test_turning_presence_off_removes_it_from_the_pbx(sync_env: SyncEnv) -> None:
    alice, bob = await setup(sync_env, 2)
    sync_env.graph.sim.api.presence.set(alice, "Busy", "InAMeeting")
    await presence_poll(sync_env)
    assert (await on_pbx(sync_env))[alice] == {"availability": "Busy", "activity": "InAMeeting"}
    sync_env.configure(presence={"enabled": False})
    clients = Clients(sync_env.graph.client, sync_env.pbx.client, sync_env.pbx.client)
    built = build_pipelines(PRESENCE_KINDS | RUN_KINDS, sync_env.tenant, sync_env.store, sync_env.sync_store, clients,
                            sync_env.graph.clock.time)
    assert not any(isinstance(p, PresenceSync) for p in built)  # off: never read
    assert any(isinstance(p, PresenceClearing) for p in built)  # a run clears what was pushed
    calls = sync_env.graph_requests(PRESENCE_CALL)
    report = await directory_run(sync_env)
    assert await on_pbx(sync_env) == {alice: None, bob: None}
    assert report.presence.counts == {"update": 2} and await sync_env.sync_store.presence_states("t") == {}
    writes = sync_env.pbx_writes()
    await directory_run(sync_env)
    assert sync_env.pbx_writes() == writes  # cleared once
    assert sync_env.graph_requests(PRESENCE_CALL) == calls  # and Graph's presence was not asked


async def test_1300_users_make_two_presence_calls_a_poll(sync_env: SyncEnv) -> None:
    await setup(sync_env, 1300)
    users = await sync_env.sync_store.active_users("t")
    assert len(users) == 1300
    for user_id, _, _ in users[::100]:
        sync_env.graph.sim.api.presence.set(user_id, "Busy", "InACall")
    writes = sync_env.pbx_writes()
    first = await presence_poll(sync_env)
    assert first.presence.requests == math.ceil(len(users) / IDS_PER_CALL) == 2
    assert first.presence.counts == {"update": len(users)}  # the first poll pushes everybody's
    # in /Bulk requests of WRITE_CHUNK, not one of 1,300: the first users land after one small request
    assert sync_env.pbx_writes() - writes == math.ceil(len(users) / WRITE_CHUNK) == 13
    calls, writes = sync_env.graph_requests(PRESENCE_CALL), sync_env.pbx_writes()
    changed = [user_id for user_id, _, _ in users[5::100]]
    for user_id in changed:
        sync_env.graph.sim.api.presence.set(user_id, "Away", "Away")
    second = await presence_poll(sync_env)
    assert sync_env.graph_requests(PRESENCE_CALL) - calls == 2
    assert second.presence.counts == {"update": len(changed)}  # only the users whose presence changed
    assert sync_env.pbx_writes() - writes <= math.ceil(len(changed) / 100)  # in /Bulk requests
    assert sync_env.graph.sim.api.presence.throttled == 0


async def test_a_polls_presence_calls_go_concurrently_within_a_bound() -> None:
    """16 calls at 10k users: READS_IN_FLIGHT at once, so a poll's read costs a few calls' latency; each
    user is asked about once."""
    in_flight, most, asked = 0, 0, []

    class Graph:
        async def request(self, method: str, path: str, *, json_body: dict[str, Any]) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            for _ in range(3):  # the answer takes a while (yields to the loop, no time passes): others may start
                await asyncio.sleep(0)
            in_flight -= 1
            asked.extend(json_body["ids"])
            return SimpleNamespace(body={"value": [{"id": i, "availability": "Away", "activity": "Away"}
                                                   for i in json_body["ids"]]})

    ids = [f"user-{index}" for index in range(10_000)]
    report = RunReport()
    presences = await read_presences(cast(GraphClient, Graph()), ids, report)
    assert most == READS_IN_FLIGHT and report.presence.requests == math.ceil(len(ids) / IDS_PER_CALL) == 16
    assert sorted(asked) == sorted(ids) and presences == dict.fromkeys(ids, ("Away", "Away"))


def test_answers_of_another_shape_leave_that_user_alone() -> None:
    body = {"value": [
        {"id": "a", "availability": "Busy", "activity": "InACall"},
        {"id": "b", "availability": 7, "activity": "Away"},  # not a string
        {"id": "c"},  # no values
        {"id": "stranger", "availability": "Busy", "activity": "Busy"},  # not asked about
        "junk",
        {"id": "d", "availability": "Busy\u0000" + "x" * 500, "activity": "NewActivityGraphAdds"},
    ]}
    found = parse_presences(body, ["a", "b", "c", "d"])
    assert set(found) == {"a", "d"}
    assert found["d"][1] == "NewActivityGraphAdds" and len(found["d"][0]) <= 64 and "\u0000" not in found["d"][0]


async def test_a_missing_permission_warns_once_per_change_and_status_shows_it(sync_env: SyncEnv) -> None:
    (alice,) = await setup(sync_env, 1)
    sync_env.graph.sim.fail_next(403, count=3, path_pattern=PRESENCE_CALL, code="Forbidden")
    with structlog.testing.capture_logs() as logs:
        reports = [await presence_poll(sync_env) for _ in range(3)]
    assert all(r.presence.written == 0 and r.failures for r in reports)  # each poll says so in its result
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["code"] == "Forbidden"  # once, not every poll
    denied = await presence_denied(sync_env.sync_store, "t")
    assert denied is not None and denied["since"] == sync_env.graph.clock.time() and denied["reason"]
    text = as_text([TenantReport(tenant="t", enabled=True, auth_state="authorized", auth_owner=None, auth_reason=None,
                                 last_run=None, next_run=None, presence_denied=denied)])
    assert "presence not permitted (403)" in text
    with structlog.testing.capture_logs() as logs:
        report = await presence_poll(sync_env)  # granted again
        await presence_poll(sync_env)
    assert report.failures == [] and report.presence.written == 1
    assert [e["event"] for e in logs if "presence" in e["event"]] == ["presence readable again"]  # once
    assert await presence_denied(sync_env.sync_store, "t") is None
    sync_env.graph.sim.fail_next(403, path_pattern=PRESENCE_CALL, code="Forbidden")
    with structlog.testing.capture_logs() as logs:
        await presence_poll(sync_env)
    assert [e["log_level"] for e in logs if e["log_level"] == "warning"] == ["warning"]  # a new change: warned again
