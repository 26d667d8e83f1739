"""Read each synced user's calendar window into stored events.

One ``calendarView`` delta per user over [today 00:00 UTC, + ``window_days``],
all through ``$batch`` (4 in flight per mailbox); the window is re-based daily
by starting a new round. Only start, end, the zones the event was created in
(to place an all-day event's day), showAs, isCancelled and isAllDay are kept:
no subject, body, attendee or location is stored. A calendar that
answers 403 is skipped until the tenant is authorized again, or for a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from daemon.errors import reason_of
from daemon.graph.client import GraphClient
from daemon.graph.delta import BatchedRounds, is_removed, stored_links
from daemon.logging import get_logger
from daemon.sync.intake import describe, merge_checked, unidentified
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

KEPT_FIELDS = ("start", "end", "originalStartTimeZone", "originalEndTimeZone", "showAs", "isCancelled", "isAllDay")


@dataclass
class CalendarsRead:
    read: set[str] = field(default_factory=set)  # users whose round completed this poll
    unreadable: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def read_calendars(tenant: str, store: Store, sync_store: SyncStore, graph: GraphClient,
                         users: Sequence[tuple[str, str, str]], window_start: datetime, window_end: datetime,
                         authorized_at: float | None) -> CalendarsRead:
    """Merge each user's calendar changes; links and window days are saved for the rounds that completed."""
    result = CalendarsRead()
    day = window_start.date().isoformat()
    states = await sync_store.calendar_states(tenant)
    links = stored_links(graph, await store.delta_links(tenant, "events"), "events")
    skip = await sync_store.skipped_unreadable(tenant, "calendar", authorized_at)
    upns = {user_id: upn for user_id, _, upn in users}
    rounds = BatchedRounds(graph)
    start, end = window_start.strftime("%Y-%m-%dT%H:%M:%SZ"), window_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    rebased: set[str] = set()
    for user_id in upns:
        if user_id in skip:
            continue
        link = links.get(user_id)
        if link and states.get(user_id, (None, None))[0] == day:
            rounds.add(user_id, link, user_id)
        else:  # first poll, or a new day: a new round over the re-based window
            await sync_store.purge_owner(tenant, "event", user_id)
            rebased.add(user_id)
            rounds.add(user_id, f"/users/{user_id}/calendarView/delta?startDateTime={start}&endDateTime={end}", user_id)
    new_links: dict[str, str] = {}
    async for event in rounds:
        user_id = event.key
        if event.kind == "page":
            changes = [{**i, "_owner": user_id} if isinstance(i, dict) and is_removed(i) is None else i
                       for i in event.items]  # the record keeps KEPT_FIELDS only
            rejected = await merge_checked(sync_store, tenant, "event", changes, owner=user_id)
            rejected += [unidentified("event", event.skipped)] if event.skipped else []
            result.failures += [f"event of {upns[user_id]}: {describe(r)}" for r in rejected]
        elif event.kind == "done" and event.delta_link is not None:
            new_links[user_id] = event.delta_link
        elif event.kind == "failed":
            if event.result is not None and event.result.status == 403:
                await sync_store.mark_unreadable(tenant, user_id, "calendar")
                result.unreadable.append(upns[user_id])
                log.warning("calendar not readable with this authorization (403); skipped until the tenant is "
                            "authorized again, or for a day", tenant=tenant, user=upns[user_id])
            else:
                result.failures.append(f"calendar of {upns[user_id]}: {reason_of(event.error)}")
                await store.drop_delta_link(tenant, "events", user_id)
    await store.save_delta_links(tenant, "events", new_links)
    await sync_store.set_window_days(tenant, [u for u in new_links if u in rebased], day)
    await sync_store.clear_unreadable(tenant, new_links, "calendar")
    result.read = set(new_links)
    return result
