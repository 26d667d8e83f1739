"""Calendar busy windows: events that block calls, as each user's ``busy`` list.

Polled on its own short interval (``events.poll_seconds``), independent of
``sync_time``, because an event created five minutes ahead must reach the
PBX before it starts. Per synced user, one ``calendarView`` delta over
[today 00:00 UTC, + ``window_days``], through ``$batch``; the window is
re-based daily by starting a new round. Only start, end, showAs,
isCancelled and isAllDay are kept: no subject, body, attendee or location is
stored, logged or sent. The ``busy`` list is PATCHed (that one attribute)
only when it changed. A mailbox that answers 403 is reported once and not
polled again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.config import TenantConfig
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.graph.delta import is_removed
from daemon.logging import get_logger
from daemon.pbx.client import PbxOperation, PbxWriter
from daemon.pbx.schema import PBX_USER
from daemon.sync.contacts import relative
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

KEPT_FIELDS = ("start", "end", "showAs", "isCancelled", "isAllDay")
# Windows time-zone names Graph may return, for the common cases.
WINDOWS_ZONES = {
    "UTC": "UTC", "GMT Standard Time": "Europe/London", "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris", "Central Europe Standard Time": "Europe/Budapest",
    "Eastern Standard Time": "America/New_York", "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver", "Pacific Standard Time": "America/Los_Angeles",
    "New Zealand Standard Time": "Pacific/Auckland", "AUS Eastern Standard Time": "Australia/Sydney",
    "Tokyo Standard Time": "Asia/Tokyo", "China Standard Time": "Asia/Shanghai", "India Standard Time": "Asia/Kolkata",
}


@dataclass
class CalendarReport:
    patched: int = 0
    unreadable: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def to_utc(part: Mapping[str, Any]) -> datetime:
    """A Graph ``{dateTime, timeZone}`` as an aware UTC datetime."""
    naive = datetime.fromisoformat(str(part["dateTime"])[:19])
    name = str(part.get("timeZone") or "UTC")
    try:
        zone = ZoneInfo(WINDOWS_ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone in an event; read as UTC", time_zone=name)
        zone = ZoneInfo("UTC")
    return naive.replace(tzinfo=zone).astimezone(UTC)


def busy_windows(events: Sequence[Mapping[str, Any]], show_as: list[str], now: datetime, window_end: datetime) -> list[dict[str, str]]:
    """The sorted, de-duplicated {start, end, showAs} windows that block calls."""
    windows = set()
    for event in events:
        if event.get("isCancelled") or event.get("showAs") not in show_as:
            continue
        start, end = to_utc(event["start"]), to_utc(event["end"])
        if end <= now or start >= window_end:
            continue  # past events drop out
        windows.add((start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ"), str(event["showAs"])))
    return [{"start": s, "end": e, "showAs": a} for s, e, a in sorted(windows)]


@dataclass
class CalendarSync:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    writer: PbxWriter
    now: Callable[[], float] = time.time

    async def poll(self, report: CalendarReport) -> None:
        name = self.tenant.name
        moment = datetime.fromtimestamp(self.now(), UTC)
        window_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        window_end = window_start + timedelta(days=self.tenant.events.window_days)
        day = window_start.date().isoformat()
        users = [u for u in await self.sync_store.active_users(name)
                 if await self.sync_store.value(name, f"calendar-unreadable:{u[0]}") is None]
        pending: list[tuple[str, str]] = []
        for user_id, _, _ in users:
            link = await self.store.delta_link(name, "events", user_id)
            if link and await self.sync_store.value(name, f"events-window:{user_id}") == day:
                pending.append((user_id, relative(link)))
            else:  # first poll, or a new day: a new round over the re-based window
                await self.sync_store.purge_where(name, "event", "_owner", user_id)
                start, end = window_start.strftime("%Y-%m-%dT%H:%M:%SZ"), window_end.strftime("%Y-%m-%dT%H:%M:%SZ")
                pending.append((user_id, f"/users/{user_id}/calendarView/delta?startDateTime={start}&endDateTime={end}"))
        by_user = {u[0]: u for u in users}
        links: dict[str, str] = {}
        while pending:
            requests = [BatchRequest(user_id, url, mailbox=user_id) for user_id, url in pending]
            pending = []
            async for result in BatchExecutor(self.graph).run(requests):
                user_id = result.request.key
                if result.status == 403:
                    await self.sync_store.set_value(name, f"calendar-unreadable:{user_id}", "403")
                    report.unreadable.append(by_user[user_id][2])
                    log.warning("calendar not readable with this authorization (403); the user is not polled again",
                                tenant=name, user=by_user[user_id][2])
                    continue
                if not result.ok or not isinstance(result.body, dict):
                    report.failures.append(f"calendar of {by_user[user_id][2]}: {result.error}")
                    await self.store.drop_delta_link(name, "events", user_id)
                    continue
                changes = []
                for item in result.body.get("value", []):
                    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                        continue
                    if is_removed(item) is None:  # keep only what decides busy-ness
                        item = {"id": item["id"], "_owner": user_id, **{k: item[k] for k in KEPT_FIELDS if k in item}}
                    changes.append(item)
                await self.sync_store.merge_changes(name, "event", changes)
                if isinstance(result.body.get("@odata.nextLink"), str):
                    pending.append((user_id, relative(result.body["@odata.nextLink"])))
                elif isinstance(result.body.get("@odata.deltaLink"), str):
                    links[user_id] = result.body["@odata.deltaLink"]
        for user_id, link in links.items():
            await self.store.save_delta_link(name, "events", link, user_id)
            await self.sync_store.set_value(name, f"events-window:{user_id}", day)
        for user_id, pbx_id, upn in users:
            if user_id in links:
                await self._push(user_id, pbx_id, upn, moment, window_end, report)

    async def _push(self, user_id: str, pbx_id: str, upn: str, now: datetime, window_end: datetime,
                    report: CalendarReport) -> None:
        name = self.tenant.name
        events = await self.sync_store.copies_where(name, "event", "_owner", user_id)
        windows = busy_windows(events, list(self.tenant.events.show_as), now, window_end)
        fingerprint = hashlib.sha256(json.dumps(windows).encode()).hexdigest()[:16]
        previous = await self.sync_store.value(name, f"busy:{user_id}")
        if previous == fingerprint:
            return
        path = f"{PBX_USER}:busy"
        operation = [{"op": "replace", "path": path, "value": windows}] if windows else [{"op": "remove", "path": path}]
        if previous is None and not windows:
            await self.sync_store.set_value(name, f"busy:{user_id}", fingerprint)
            return
        outcome = await self.writer.execute(PbxOperation("update", "User", user_id, operations=operation, pbx_id=pbx_id))
        if outcome.ok:
            report.patched += 1
            await self.sync_store.set_value(name, f"busy:{user_id}", fingerprint)
        else:
            report.failures.append(f"busy list of {upn}: {outcome.error}")
