"""Calendar busy windows on a fake clock: freshness, showAs rules, all-day and
recurring events across time zones and DST, re-basing, privacy, 403s, cost."""

from __future__ import annotations

import io
import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from daemon.logging import configure_logging
from daemon.pbx.schema import PBX_USER
from daemon.sync.calendar import CalendarSync
from daemon.sync.kinds import ALL_KINDS, POLL_KINDS, RUN_KINDS, BusyClearing, Clients, PresenceClearing, build_pipelines
from daemon.sync.report import RunReport
from daemon.sync.tenant import TenantSync
from sim.generator import generate_tenant
from sync_fixtures import OneTenantConfig, SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)

SECRET_SUBJECT = "Board meeting: acquisition of Fabrikam"


def add_user(env: SyncEnv, index: int) -> str:
    user_id = f"00000000-0000-4000-8000-{index:012d}"
    env.graph.tenant.add_user(user_id, displayName=f"User {index}", userPrincipalName=f"user{index:03d}@contoso.example",
                              accountEnabled=True, userType="Member")
    return user_id


def event(env: SyncEnv, user: str, event_id: str, start: datetime, minutes: int = 30, zone: str = "UTC", **fields: Any) -> None:
    local_start = start.astimezone(ZoneInfo(zone))
    properties = {"subject": SECRET_SUBJECT, "body": {"contentType": "text", "content": "secret"},
                  "showAs": "busy", "isCancelled": False, "isAllDay": False, "sensitivity": "normal",
                  "start": {"dateTime": local_start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone},
                  "end": {"dateTime": (local_start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone},
                  **fields}
    env.graph.tenant.put_event(user, event_id, **properties)


async def poll(env: SyncEnv) -> RunReport:
    report = RunReport()
    await CalendarSync(env.tenant, env.store, env.sync_store, env.graph.client, env.pbx.client, env.graph.clock.time).run(report)
    return report


async def busy(env: SyncEnv, user: str) -> list[dict[str, str]]:
    """The user's busy list as the PBX stores it, times normalised to ...Z."""
    data = (await env.pbx_users())[user]
    return [{"start": iso(parse(b["start"])), "end": iso(parse(b["end"])), "showAs": b["showAs"]}
            for b in data.get(PBX_USER, {}).get("busy", [])]


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def setup(env: SyncEnv, users: int = 1) -> list[str]:
    ids = [add_user(env, i) for i in range(1, users + 1)]
    env.configure(events={"enabled": True})
    await env.run()
    return ids


async def test_an_event_five_minutes_ahead_is_on_the_pbx_within_one_poll(sync_env: SyncEnv) -> None:
    (user,) = await setup(sync_env)
    assert (await poll(sync_env)).busy.written == 0  # nothing busy yet: nothing to write
    soon = sync_env.graph.clock.now() + timedelta(minutes=5)
    event(sync_env, user, "e-soon", soon)
    sync_env.graph.clock.advance(60)
    assert (await poll(sync_env)).busy.written == 1
    assert await busy(sync_env, user) == [{"start": iso(soon), "end": iso(soon + timedelta(minutes=30)), "showAs": "busy"}]
    writes = sync_env.pbx_writes()
    assert (await poll(sync_env)).busy.written == 0 and sync_env.pbx_writes() == writes  # unchanged: no PATCH


async def test_cancelled_free_and_private_events(sync_env: SyncEnv) -> None:
    (user,) = await setup(sync_env)
    base = sync_env.graph.clock.now() + timedelta(hours=2)
    event(sync_env, user, "e-cancelled", base, isCancelled=True)
    event(sync_env, user, "e-free", base + timedelta(hours=1), showAs="free")
    event(sync_env, user, "e-private", base + timedelta(hours=2), sensitivity="private", showAs="oof")
    event(sync_env, user, "e-tentative", base + timedelta(hours=3), showAs="tentative")
    await poll(sync_env)
    windows = await busy(sync_env, user)
    assert [w["showAs"] for w in windows] == ["oof", "tentative"]
    assert windows[0]["start"] == iso(base + timedelta(hours=2))


async def test_all_day_event_in_auckland_covers_the_auckland_day(sync_env: SyncEnv) -> None:
    (user,) = await setup(sync_env)
    day = {"dateTime": "2026-12-02T00:00:00.0000000", "timeZone": "Pacific/Auckland"}
    sync_env.graph.tenant.put_event(user, "e-allday", subject=SECRET_SUBJECT, showAs="oof", isCancelled=False, isAllDay=True,
                                    start=day, end={"dateTime": "2026-12-03T00:00:00.0000000", "timeZone": "Pacific/Auckland"})
    await poll(sync_env)
    # NZDT is UTC+13 in December: the Auckland day runs 11:00Z to 11:00Z.
    assert await busy(sync_env, user) == [{"start": "2026-12-01T11:00:00Z", "end": "2026-12-02T11:00:00Z", "showAs": "oof"}]


async def test_recurring_series_across_a_dst_change(sync_env: SyncEnv) -> None:
    sync_env.graph.clock.set(datetime(2026, 3, 26, 6, 0, tzinfo=UTC))  # Europe/Berlin moves to summer time on 29 March
    (user,) = await setup(sync_env)
    sync_env.graph.tenant.put_event(
        user, "series", subject=SECRET_SUBJECT, showAs="busy", isCancelled=False, isAllDay=False, type="seriesMaster",
        start={"dateTime": "2026-03-27T09:00:00.0000000", "timeZone": "Europe/Berlin"},
        end={"dateTime": "2026-03-27T09:30:00.0000000", "timeZone": "Europe/Berlin"},
        recurrence={"pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "numbered", "startDate": "2026-03-27", "numberOfOccurrences": 4}},
    )
    await poll(sync_env)
    starts = [w["start"] for w in await busy(sync_env, user)]
    assert starts == ["2026-03-27T08:00:00Z", "2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"]


async def test_rebase_drops_past_events(sync_env: SyncEnv) -> None:
    (user,) = await setup(sync_env)
    now = sync_env.graph.clock.now()
    event(sync_env, user, "e-today", now + timedelta(hours=1))
    event(sync_env, user, "e-later", now + timedelta(days=3))
    await poll(sync_env)
    assert len(await busy(sync_env, user)) == 2
    sync_env.graph.clock.advance(86400)  # the next day: a new window, the first event is past
    report = await poll(sync_env)
    assert report.busy.written == 1
    assert [w["start"] for w in await busy(sync_env, user)] == [iso(now + timedelta(days=3))]


async def test_no_subject_reaches_the_pbx_or_the_log(sync_env: SyncEnv) -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    try:
        (user,) = await setup(sync_env)
        event(sync_env, user, "e-secret", sync_env.graph.clock.now() + timedelta(hours=1), sensitivity="private")
        await poll(sync_env)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    pbx_text = repr(await sync_env.pbx_users())
    assert "busy" in pbx_text and SECRET_SUBJECT not in pbx_text and "secret" not in pbx_text.replace("e-secret", "")
    assert SECRET_SUBJECT not in out.getvalue()
    stored = (await sync_env.sync_store.copies_of_owners("t", "event", [user]))[user]
    kept = {"id", "_owner", "start", "end", "originalStartTimeZone", "originalEndTimeZone", "showAs", "isCancelled", "isAllDay"}
    assert stored and all(set(e) <= kept for e in stored)


async def test_unreadable_calendars_are_reported_once(sync_env: SyncEnv) -> None:
    readable, locked = await setup(sync_env, users=2)
    sync_env.graph.sim.api.settings.forbidden_mailboxes.add(locked)
    event(sync_env, readable, "e-ok", sync_env.graph.clock.now() + timedelta(hours=1))
    report = await poll(sync_env)
    assert report.busy.unreadable == ["user002@contoso.example"] and report.busy.written == 1
    requests = sync_env.graph_requests(locked)
    assert (await poll(sync_env)).busy.unreadable == []
    assert sync_env.graph_requests(locked) == requests


async def test_no_change_poll_at_1000_users_costs_one_batch_per_20_users(sync_env: SyncEnv) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=1000, events_per_user=2, photo_fraction=0)
    sync_env.configure(events={"enabled": True})
    await sync_env.run()
    await poll(sync_env)
    batches, writes = sync_env.graph_requests(r"^/\$batch$"), sync_env.pbx_writes()
    await poll(sync_env)
    assert sync_env.graph_requests(r"^/\$batch$") - batches <= math.ceil(len(made.members) / 20)
    assert sync_env.pbx_writes() == writes


async def test_unreadable_calendar_shows_in_status(sync_env: SyncEnv) -> None:
    from daemon import status

    readable, locked = await setup(sync_env, users=2)
    sync_env.graph.sim.api.settings.forbidden_mailboxes.add(locked)
    await poll(sync_env)

    (report,) = await status.collect(OneTenantConfig(sync_env.tenant, sync_env.tmp_path / "m365sync.toml"), sync_env.store, sync_env.sync_store)  # type: ignore[arg-type]
    assert report.unreadable_calendars == ["user002@contoso.example"]
    assert "calendars not readable (403): user002@contoso.example" in status.as_text([report])


async def test_busy_windows_are_built_by_the_one_factory_and_log_their_plan(sync_env: SyncEnv) -> None:
    (user,) = await setup(sync_env)
    event(sync_env, user, "e-soon", sync_env.graph.clock.now() + timedelta(minutes=5))
    env = sync_env
    clients = Clients(env.graph.client, env.pbx.client, env.pbx.client)

    def built(kinds: frozenset[str]) -> list[type]:
        return [type(p) for p in build_pipelines(kinds, env.tenant, env.store, env.sync_store, clients,
                                                 env.graph.clock.time)]

    # presence is off: a run clears what it may have pushed (test_presence.py)
    assert built(POLL_KINDS) == [CalendarSync] and built(RUN_KINDS) == [TenantSync, PresenceClearing]
    assert built(ALL_KINDS) == [TenantSync, CalendarSync, PresenceClearing]
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        (pipeline,) = build_pipelines(POLL_KINDS, env.tenant, env.store, env.sync_store, clients, env.graph.clock.time)
        report = await pipeline.run()  # the one report type: RunReport
        await pipeline.run(report)  # nothing changed: its plan is logged at debug only
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert report.busy.written == 1 and report.busy.counts == {"update": 1} and report.failures == []
    plans = [line for line in map(json.loads, out.getvalue().splitlines()) if line["event"] == "sync plan"]
    assert [(p["kinds"], p["changes"], p["writes"]) for p in plans] == [(["busy"], {"busy": {"update": 1}}, 1)]
    env.configure(events={"enabled": False})
    assert built(POLL_KINDS) == [] and built(ALL_KINDS) == [TenantSync, BusyClearing, PresenceClearing]  # no calendar read; runs clear
