"""The busy-window planner: stored calendar events -> each user's ``busy``
list on the PBX. Pure. Only start, end, showAs, isCancelled and isAllDay are
ever stored or read: no subject, body, attendee or location. The list is
PATCHed (that one attribute) only when it changed, which a fingerprint of the
last pushed list tells without keeping the list itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.logging import get_logger
from daemon.pbx.schema import PBX_USER
from daemon.pbx.types import PbxOperation
from daemon.sync.changes import Change, Phase, Plan
from state.pushed import BusyPushed

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


def plan_busy(users: Iterable[tuple[str, str, str]], events: Mapping[str, Sequence[Mapping[str, Any]]],
              pushed: Mapping[str, str | None], show_as: list[str], now: datetime, window_end: datetime) -> Plan:
    """One ``busy`` PATCH per user (id, PBX id, UPN) whose windows changed since the last push."""
    plan = Plan()
    path = f"{PBX_USER}:busy"
    for user_id, pbx_id, upn in users:
        windows = busy_windows(events.get(user_id, ()), show_as, now, window_end)
        fingerprint = hashlib.sha256(json.dumps(windows).encode()).hexdigest()[:16]
        previous = pushed.get(user_id)
        if previous == fingerprint:
            continue
        if previous is None and not windows:  # never pushed, nothing to push
            plan.bookkeeping.append(BusyPushed(user_id, fingerprint))
            continue
        operations = [{"op": "replace", "path": path, "value": windows}] if windows else [{"op": "remove", "path": path}]
        operation = PbxOperation("update", "User", user_id, operations=operations, pbx_id=pbx_id)
        plan.changes.append(Change("busy", "update", Phase.WRITE, operation, BusyPushed(user_id, fingerprint), upn,
                                   f"{len(windows)} busy window(s)"))
    return plan
