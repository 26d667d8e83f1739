"""The busy-window planner: stored calendar events -> each user's ``busy``
list on the PBX. Pure. Only times, zones, showAs, isCancelled and isAllDay are
ever stored or read (``read_calendar.KEPT_FIELDS``): no subject, body, attendee
or location. All-day events are placed in their own zone's day (``zones``). The list is
PATCHed (that one attribute) only when it changed, which a fingerprint of the
last pushed list tells without keeping the list itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from daemon.pbx.schema import PBX_USER
from daemon.pbx.types import PbxOperation
from daemon.sync.changes import Change, Phase, Plan
from daemon.sync.zones import AllDayPlacer
from state.attributes import BusyPushed


def busy_windows(events: Sequence[Mapping[str, Any]], show_as: list[str], now: datetime, window_end: datetime,
                 user_id: str = "", placer: AllDayPlacer | None = None) -> list[dict[str, str]]:
    """The sorted, de-duplicated {start, end, showAs} windows that block calls."""
    placer = placer or AllDayPlacer()
    windows = set()
    for event in events:
        if event.get("isCancelled") or event.get("showAs") not in show_as:
            continue
        start, end = placer.bounds(user_id, event)
        if end <= now or start >= window_end:
            continue  # past events drop out
        windows.add((start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ"), str(event["showAs"])))
    return [{"start": s, "end": e, "showAs": a} for s, e, a in sorted(windows)]


def plan_busy(users: Iterable[tuple[str, str, str]], events: Mapping[str, Sequence[Mapping[str, Any]]],
              pushed: Mapping[str, str | None], show_as: list[str], now: datetime, window_end: datetime,
              placer: AllDayPlacer | None = None) -> Plan:
    """One ``busy`` PATCH per user (id, PBX id, UPN) whose windows changed since the last push."""
    plan = Plan()
    path = f"{PBX_USER}:busy"
    for user_id, pbx_id, upn in users:
        try:
            windows = busy_windows(events.get(user_id, ()), show_as, now, window_end, user_id, placer)
        except Exception as error:  # one calendar's failure: the others are still pushed
            plan.fail("busy", user_id, upn, error)
            continue
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
