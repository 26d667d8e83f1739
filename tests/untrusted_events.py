"""Calendar events for the property test: valid ones (timed or all-day, in
IANA, Windows or unknown zones, with flags as Graph or as text) whose busy
windows are worked out here independently of the daemon, and spoiled ones
(wrong types, missing keys, huge or unreadable date-times, invalid Unicode)
that Graph cannot store, so the simulator's answers are spoiled on the way
out by a middleware, which swaps each one in by id (``$batch`` bodies too)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from hypothesis import strategies as st

from sim.store import SimTenant

GRAPH_DATETIME = "%Y-%m-%dT%H:%M:%S.0000000"
# Zone names an event may carry -> where its times lie; an unknown name reads as UTC.
ZONES: dict[str, ZoneInfo] = {"UTC": ZoneInfo("UTC"), "W. Europe Standard Time": ZoneInfo("Europe/Berlin"),
                              "America/New_York": ZoneInfo("America/New_York"),
                              "AUS Eastern Standard Time": ZoneInfo("Australia/Sydney"),
                              "Mars/Olympus": ZoneInfo("UTC"), "\ud800": ZoneInfo("UTC"), "": ZoneInfo("UTC")}
SHOW_AS = ["busy", "oof", "tentative", "free", "workingElsewhere", "unknown", "\ud83d\ude00"]
FLAGS = [None, False, True]
FLAG_NAMES = ("isAllDay", "isCancelled")


def _is_true(flag: Any) -> bool:
    return flag is True


def _as_text(item: dict[str, Any]) -> dict[str, Any]:
    return item | {k: str(item[k]).lower() for k in FLAG_NAMES if isinstance(item.get(k), bool)}


@dataclass(frozen=True)
class Event:
    """One generated event: its Graph properties, and how to spoil it (None: valid)."""

    properties: dict[str, Any]  # as the simulator stores it (flags as booleans: it reads them)
    spoil: Callable[[dict[str, Any]], dict[str, Any]] | None
    spoiled_by: str = ""
    flags_as_text: bool = False  # sent as "true"/"false", which the daemon reads as the flags they name

    def window(self, show_as: list[str], now: datetime, window_end: datetime) -> tuple[str, str, str] | None:
        """The busy window this (valid) event blocks, computed from what was generated."""
        p = self.properties
        if _is_true(p.get("isCancelled")) or p["showAs"] not in show_as:
            return None
        if _is_true(p.get("isAllDay")):
            zone = ZONES[p["originalStartTimeZone"]]
            start = datetime.fromisoformat(p["start"]["dateTime"][:10]).replace(tzinfo=zone).astimezone(UTC)
            end = datetime.fromisoformat(p["end"]["dateTime"][:10]).replace(tzinfo=zone).astimezone(UTC)
        else:
            start, end = (datetime.fromisoformat(p[k]["dateTime"][:19]).replace(tzinfo=ZONES[p[k]["timeZone"]])
                          .astimezone(UTC) for k in ("start", "end"))
        if end <= now or start >= window_end:
            return None
        return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ"), p["showAs"]


@st.composite
def valid_event(draw: st.DrawFn, day: datetime) -> dict[str, Any]:
    """A timed event within the first 12 days after ``day`` (midnight UTC), or an all-day one
    (``isAllDay`` true and midnights, the only way the simulator renders it)."""
    zone_name = draw(st.sampled_from(sorted(ZONES)))
    properties: dict[str, Any] = {"subject": draw(st.sampled_from(["Private meeting", "x\ud800y", "\0"])),
                                  "showAs": draw(st.sampled_from(SHOW_AS)),
                                  "isCancelled": draw(st.sampled_from(FLAGS))}
    if draw(st.booleans()):
        first = (day + timedelta(days=draw(st.integers(0, 10)))).date()
        last = first + timedelta(days=draw(st.integers(1, 2)))
        properties |= {"isAllDay": True, "originalStartTimeZone": zone_name,
                       "originalEndTimeZone": zone_name,
                       "start": {"dateTime": f"{first}T00:00:00.0000000", "timeZone": zone_name},
                       "end": {"dateTime": f"{last}T00:00:00.0000000", "timeZone": zone_name}}
        return properties
    start = day + timedelta(minutes=15 * draw(st.integers(0, 12 * 96)))
    end = start + timedelta(minutes=15 * draw(st.integers(1, 40)))
    local = ZONES[zone_name]
    properties |= {"isAllDay": draw(st.sampled_from([None, False])),
                   "start": {"dateTime": start.astimezone(local).strftime(GRAPH_DATETIME), "timeZone": zone_name},
                   "end": {"dateTime": end.astimezone(local).strftime(GRAPH_DATETIME), "timeZone": zone_name}}
    return properties


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def spoil(item: dict[str, Any]) -> dict[str, Any]:
        out = {**item, path[0]: dict(item.get(path[0]) or {})} if len(path) == 2 else dict(item)
        (out[path[0]] if len(path) == 2 else out)[path[-1]] = value
        return out
    return spoil


def _without(*path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def spoil(item: dict[str, Any]) -> dict[str, Any]:
        if len(path) == 1:
            return {k: v for k, v in item.items() if k != path[0]}
        return {**item, path[0]: {k: v for k, v in item[path[0]].items() if k != path[1]}}
    return spoil


# How an event read from Graph can be unusable: each one refuses that event alone.
SPOILS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "no id": _without("id"),
    "a number for an id": _set(("id",), 7),
    "a number for start": _set(("start",), 20261130),
    "no start": _without("start"),
    "no end": _without("end"),
    "no dateTime": _without("end", "dateTime"),
    "an unreadable dateTime": _set(("start", "dateTime"), "2026-13-45T25:61:00.0000000"),
    "text for a dateTime": _set(("start", "dateTime"), "tomorrow\ud800"),
    "a huge dateTime": _set(("end", "dateTime"), "2" * 20000),
    "an object for a dateTime": _set(("start", "dateTime"), {"value": "2026-12-01T08:00:00"}),
    "a list for showAs": _set(("showAs",), ["busy"]),
    "a huge zone": _set(("originalStartTimeZone",), "z" * 5000),
    "a word for isAllDay": _set(("isAllDay",), "maybe"),
    "a number for isCancelled": _set(("isCancelled",), 3),
}


@st.composite
def event(draw: st.DrawFn, day: datetime) -> Event:
    properties, as_text = draw(valid_event(day)), draw(st.booleans())
    if draw(st.booleans()):
        return Event(properties, None, flags_as_text=as_text)
    name = draw(st.sampled_from(sorted(SPOILS)))
    return Event(properties, SPOILS[name], name, as_text)


def put_events(tenant: SimTenant, owner: str, events: list[Event]) -> dict[str, Event]:
    """Each event in the simulator's mailbox of ``owner`` (a spoiled one as its valid self); by id."""
    by_id = {}
    for index, generated in enumerate(events):
        tenant.put_event(owner, f"ev{index}", **generated.properties)
        by_id[f"ev{index}"] = generated
    return by_id


def spoiling_middleware(events: Mapping[str, Event]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that swaps every spoiled event in the simulator's answers."""

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        generated = events.get(value.get("id")) if value.get("@odata.type") == "#microsoft.graph.event" else None
        if generated is not None and "@removed" not in value:
            value = _as_text(value) if generated.flags_as_text else value
            return generated.spoil(value) if generated.spoil is not None else value
        return {k: walk(v) for k, v in value.items()}

    @web.middleware
    async def spoil(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        response = await handler(request)
        if "calendarView" not in request.path and "$batch" not in request.path:
            return response
        if not isinstance(response, web.Response) or response.body is None or response.content_type != "application/json":
            return response
        assert isinstance(response.body, bytes)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
        return web.Response(status=response.status, text=json.dumps(walk(json.loads(response.body))),
                            content_type="application/json", headers=headers)

    return spoil
