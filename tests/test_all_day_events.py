"""All-day events land as the user's local day, Graph to PBX: the simulator
answers as Graph does (midnight labelled UTC, the event's own zone in
``originalStartTimeZone``), and the daemon places the day in that zone, else
the mailbox's, else the tenant's; timed events keep their instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from state.open import open_database
from state.schema import bundled_migrations
from state.store import Store
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)
from test_calendar_sync import add_user, busy, iso, poll

SYDNEY, LOS_ANGELES = "AUS Eastern Standard Time", "Pacific Standard Time"  # Windows names, as Outlook writes them


def all_day(env: SyncEnv, user: str, event_id: str, first: str, last_exclusive: str, zone: str, **fields: Any) -> None:
    env.graph.tenant.put_event(user, event_id, subject="Day off", showAs="oof", isCancelled=False, isAllDay=True,
                               start={"dateTime": f"{first}T00:00:00.0000000", "timeZone": zone},
                               end={"dateTime": f"{last_exclusive}T00:00:00.0000000", "timeZone": zone}, **fields)


def timed(env: SyncEnv, user: str, event_id: str, local_start: str, local_end: str, zone: str) -> None:
    env.graph.tenant.put_event(user, event_id, subject="Call", showAs="busy", isCancelled=False, isAllDay=False,
                               start={"dateTime": f"{local_start}.0000000", "timeZone": zone},
                               end={"dateTime": f"{local_end}.0000000", "timeZone": zone})


async def start(env: SyncEnv, users: int = 2, **sections: Any) -> list[str]:
    ids = [add_user(env, i) for i in range(1, users + 1)]
    env.configure(events={"enabled": True}, **sections)
    await env.run()
    return ids


async def test_a_day_off_in_sydney_and_in_los_angeles_is_their_local_day(sync_env: SyncEnv) -> None:
    sydney, los_angeles = await start(sync_env)
    all_day(sync_env, sydney, "off-syd", "2026-12-03", "2026-12-04", SYDNEY)
    all_day(sync_env, los_angeles, "off-la", "2026-12-03", "2026-12-04", LOS_ANGELES)
    timed(sync_env, sydney, "call-syd", "2026-12-04T09:00:00", "2026-12-04T09:30:00", SYDNEY)
    timed(sync_env, los_angeles, "call-la", "2026-12-04T09:00:00", "2026-12-04T09:30:00", LOS_ANGELES)
    await poll(sync_env)
    # Graph labels the day 2026-12-03T00:00 UTC for both; Sydney is UTC+11 (AEDT), Los Angeles UTC-8 (PST).
    assert await busy(sync_env, sydney) == [
        {"start": "2026-12-02T13:00:00Z", "end": "2026-12-03T13:00:00Z", "showAs": "oof"},
        {"start": "2026-12-03T22:00:00Z", "end": "2026-12-03T22:30:00Z", "showAs": "busy"},
    ]
    assert await busy(sync_env, los_angeles) == [
        {"start": "2026-12-03T08:00:00Z", "end": "2026-12-04T08:00:00Z", "showAs": "oof"},
        {"start": "2026-12-04T17:00:00Z", "end": "2026-12-04T17:30:00Z", "showAs": "busy"},
    ]


async def test_what_graph_answers_for_an_all_day_event_is_the_utc_label_not_the_local_day(sync_env: SyncEnv) -> None:
    (sydney,) = await start(sync_env, users=1)
    all_day(sync_env, sydney, "off-syd", "2026-12-03", "2026-12-04", SYDNEY)
    now = sync_env.graph.clock.now()
    body = (await sync_env.graph.client.get(
        f"/users/{sydney}/calendarView/delta?startDateTime={iso(now)}&endDateTime={iso(now + timedelta(days=7))}")).body
    (item,) = body["value"]
    assert item["start"] == {"dateTime": "2026-12-03T00:00:00.0000000", "timeZone": "UTC"}
    assert item["isAllDay"] is True and item["originalStartTimeZone"] == SYDNEY


async def test_a_multi_day_event_across_the_dst_change_keeps_local_midnights(sync_env: SyncEnv) -> None:
    sync_env.graph.clock.set(datetime(2027, 3, 12, 8, 0, tzinfo=UTC))  # Los Angeles moves to PDT on 14 March 2027
    (los_angeles,) = await start(sync_env, users=1)
    all_day(sync_env, los_angeles, "trip", "2027-03-13", "2027-03-16", LOS_ANGELES)
    await poll(sync_env)
    assert await busy(sync_env, los_angeles) == [{"start": "2027-03-13T08:00:00Z", "end": "2027-03-16T07:00:00Z", "showAs": "oof"}]


def zoneless_day_off(env: SyncEnv, user: str) -> None:
    all_day(env, user, "off", "2026-12-03", "2026-12-04", "UTC",
            originalStartTimeZone="tzone://Microsoft/Custom", originalEndTimeZone="tzone://Microsoft/Custom")


async def test_without_a_zone_of_its_own_the_mailbox_zone_places_the_day(sync_env: SyncEnv) -> None:
    tokyo = add_user(sync_env, 1)
    sync_env.graph.tenant.mailbox_time_zone[tokyo] = "Tokyo Standard Time"
    sync_env.configure(events={"enabled": True}, shared_mailbox={"enabled": True}, timezone="Europe/Berlin")
    await sync_env.run()  # reads mailboxSettings (userPurpose and timeZone)
    zoneless_day_off(sync_env, tokyo)
    await poll(sync_env)
    assert await busy(sync_env, tokyo) == [{"start": "2026-12-02T15:00:00Z", "end": "2026-12-03T15:00:00Z", "showAs": "oof"}]


async def test_without_any_known_zone_the_tenant_timezone_places_the_day(sync_env: SyncEnv) -> None:
    user = add_user(sync_env, 1)
    sync_env.configure(events={"enabled": True}, timezone="Europe/Berlin")  # mailboxSettings are not read
    await sync_env.run()
    zoneless_day_off(sync_env, user)
    await poll(sync_env)
    # Berlin is UTC+1 in December
    assert await busy(sync_env, user) == [{"start": "2026-12-02T23:00:00Z", "end": "2026-12-03T23:00:00Z", "showAs": "oof"}]


async def test_the_upgrade_drops_calendar_links_once_so_every_calendar_is_read_again(tmp_path: Path) -> None:
    migrations = bundled_migrations()
    path = tmp_path / "state.db"
    db = await open_database(path, [m for m in migrations if m.version < 9])
    store = Store(db)
    await store.register_tenant("t", "d", "a")
    await store.save_delta_links("t", "events", {"u1": "https://graph.example/v1.0/users/u1/calendarView/delta?$deltatoken=x"})
    await store.save_delta_links("t", "contacts", {"u1:contacts": "https://graph.example/v1.0/c?$deltatoken=y"})
    await db.close()
    db = await open_database(path)
    store = Store(db)
    assert await store.delta_links("t", "events") == {}
    assert set(await store.delta_links("t", "contacts")) == {"u1:contacts"}
    await store.save_delta_links("t", "events", {"u1": "https://graph.example/v1.0/again"})
    await db.close()
    db = await open_database(path)  # once: a later start keeps the new links
    assert set(await Store(db).delta_links("t", "events")) == {"u1"}
    await db.close()
