"""Calendar events as ``calendarView`` shows them: the time window, the
requested zone, all-day events and the occurrences of a series.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

from sim.answers import SimResponse, graph_error
from sim.store import Record

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MAX_OCCURRENCES = 1000
GRAPH_DATETIME = "%Y-%m-%dT%H:%M:%S.0000000"


def parse_window(query: dict[str, str]) -> list[str] | SimResponse:
    try:
        start = parse_instant(query["startDateTime"])
        end = parse_instant(query["endDateTime"])
    except (KeyError, ValueError):
        return graph_error(400, "ErrorInvalidParameter", "This request requires a time window specified by startDateTime and endDateTime.")
    return [start.isoformat(), end.isoformat()]


def parse_instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def zone(name: str) -> ZoneInfo:
    """An IANA or Windows zone name (Outlook uses both) as a ZoneInfo; UTC if unknown."""
    try:
        return ZoneInfo(win_tz.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def event_bounds(data: dict[str, Any]) -> tuple[datetime, datetime]:
    """The event's start and end instants. An all-day event spans its own zone's days."""
    def instant(part: dict[str, str]) -> datetime:
        naive = datetime.fromisoformat(part["dateTime"][:19])
        return naive.replace(tzinfo=zone(part.get("timeZone", "UTC"))).astimezone(UTC)

    return instant(data["start"]), instant(data["end"])


def prefer_timezone(prefer: str) -> str:
    """``Prefer: outlook.timezone="..."``; UTC without it
    (https://learn.microsoft.com/en-us/graph/api/user-list-calendarview, "Request headers")."""
    match = re.search(r'outlook\.timezone="([^"]+)"', prefer)
    return match.group(1) if match else "UTC"


def render_event(record: Record, zone_name: str) -> dict[str, Any]:
    """The event in the requested zone (UTC without ``Prefer: outlook.timezone``).

    All-day events: start and end come back as midnight *labelled with the
    requested zone*, whatever zone the event belongs to; ``originalStartTimeZone``
    names the zone it was created in. A Sydney day off therefore reads as
    ``00:00Z-24:00Z`` (Microsoft engineers' answers on microsoftgraph/microsoft-graph-docs
    issues about isAllDay events and outlook.timezone; the reference pages are silent)."""
    data = record.data
    out: dict[str, Any] = {"id": record.id}
    for key, value in data.items():
        if key != "recurrence":
            out[key] = value
    # Graph always sends the zones the event was created in
    # (https://learn.microsoft.com/en-us/graph/api/resources/event, "originalStartTimeZone").
    out.setdefault("originalStartTimeZone", data["start"].get("timeZone", "UTC"))
    out.setdefault("originalEndTimeZone", data["end"].get("timeZone", "UTC"))
    if data.get("isAllDay"):
        for part in ("start", "end"):
            day = str(data[part]["dateTime"])[:10]
            out[part] = {"dateTime": f"{day}T00:00:00.0000000", "timeZone": zone_name}
        return out
    start, end = event_bounds(data)
    target = zone(zone_name)
    out["start"] = {"dateTime": start.astimezone(target).strftime(GRAPH_DATETIME), "timeZone": zone_name}
    out["end"] = {"dateTime": end.astimezone(target).strftime(GRAPH_DATETIME), "timeZone": zone_name}
    return out


def occurrences(master: Record, window_start: datetime, window_end: datetime) -> list[Record]:
    """The occurrences of a daily or weekly series that overlap the window,
    expanded in the series' own time zone (so DST keeps the local time)."""
    data = master.data
    pattern, range_ = data["recurrence"]["pattern"], data["recurrence"]["range"]
    series_zone = zone(data["start"].get("timeZone", "UTC"))
    first = datetime.fromisoformat(data["start"]["dateTime"][:19])
    length = datetime.fromisoformat(data["end"]["dateTime"][:19]) - first
    interval = int(pattern.get("interval", 1))
    weekdays = {WEEKDAYS.index(d) for d in pattern.get("daysOfWeek", [])} or {first.weekday()}
    last_date = datetime.fromisoformat(range_["endDate"]).date() if range_.get("type") == "endDate" else None
    limit = int(range_.get("numberOfOccurrences", MAX_OCCURRENCES)) if range_.get("type") == "numbered" else MAX_OCCURRENCES
    found: list[Record] = []
    count = 0
    day = first.date()
    while count < limit and (last_date is None or day <= last_date):
        weeks = (day - first.date()).days // 7
        if pattern["type"] == "daily":
            due = (day - first.date()).days % interval == 0
        else:
            due = weeks % interval == 0 and day.weekday() in weekdays
        if due:
            count += 1
            local = datetime.combine(day, first.time())
            start = local.replace(tzinfo=series_zone).astimezone(UTC)
            end = (local + length).replace(tzinfo=series_zone).astimezone(UTC)
            if start >= window_end:
                break
            if end > window_start:
                occurrence = {k: v for k, v in data.items() if k != "recurrence"}
                occurrence.update(
                    type="occurrence", seriesMasterId=master.id,
                    start={"dateTime": local.strftime(GRAPH_DATETIME), "timeZone": data["start"]["timeZone"]},
                    end={"dateTime": (local + length).strftime(GRAPH_DATETIME), "timeZone": data["end"]["timeZone"]},
                )
                found.append(Record(f"{master.id}.{day:%Y%m%d}", occurrence, master.seq, {}))
        day = day.fromordinal(day.toordinal() + 1)
    return found
