"""Time zones of calendar events, and where an all-day event's day lies.

Outlook names zones with Windows names ("AUS Eastern Standard Time") or IANA
names; Windows names map through CLDR's windowsZones table as tzlocal ships
it, so the table stays maintained upstream. Graph returns an all-day event as
midnight to midnight *labelled with the requested zone* (UTC here), whatever
zone the event belongs to: its day is placed in its own zone
(``originalStartTimeZone`` / ``originalEndTimeZone``), else the mailbox's zone
(``mailboxSettings.timeZone``, where it was read), else the tenant's
``timezone``. Start and end are placed separately, so multi-day events and
DST days keep their local midnights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

from daemon.logging import get_logger

log = get_logger(__name__)

_fallback_logged: set[tuple[str, str]] = set()  # (tenant, zone): the tenant-zone fallback is logged once


def zone_named(name: object) -> ZoneInfo | None:
    """An IANA or Windows zone name as a ZoneInfo; None when unknown or empty."""
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(win_tz.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def to_utc(part: Mapping[str, Any]) -> datetime:
    """A Graph ``{dateTime, timeZone}`` as an aware UTC datetime (an unknown zone reads as UTC)."""
    naive = datetime.fromisoformat(str(part["dateTime"])[:19])
    name = str(part.get("timeZone") or "UTC")
    zone = zone_named(name)
    if zone is None:
        log.warning("unknown time zone in an event; read as UTC", time_zone=name)
        zone = ZoneInfo("UTC")
    return naive.replace(tzinfo=zone).astimezone(UTC)


@dataclass
class AllDayPlacer:
    """Places each user's all-day events in the right zone's days."""

    tenant: str = ""
    tenant_zone: str = "UTC"
    mailbox_zones: Mapping[str, str] = field(default_factory=dict)  # user id -> mailboxSettings.timeZone

    def bounds(self, user_id: str, event: Mapping[str, Any]) -> tuple[datetime, datetime]:
        """The event's start and end instants; an all-day event spans its local days."""
        if not event.get("isAllDay"):
            return to_utc(event["start"]), to_utc(event["end"])
        start_zone = self._zone(user_id, event.get("originalStartTimeZone"))
        end_zone = zone_named(event.get("originalEndTimeZone")) or start_zone
        return _local_midnight(event["start"], start_zone), _local_midnight(event["end"], end_zone)

    def _zone(self, user_id: str, own: object) -> ZoneInfo:
        zone = zone_named(own) or zone_named(self.mailbox_zones.get(user_id))
        if zone is not None:
            return zone
        if (self.tenant, self.tenant_zone) not in _fallback_logged:
            _fallback_logged.add((self.tenant, self.tenant_zone))
            log.info("all-day events without a known zone are placed in the tenant's timezone",
                     tenant=self.tenant, timezone=self.tenant_zone)
        return zone_named(self.tenant_zone) or ZoneInfo("UTC")


def _local_midnight(part: Mapping[str, Any], zone: ZoneInfo) -> datetime:
    """The date Graph labelled (midnight in the requested zone) as midnight in ``zone``."""
    day = datetime.fromisoformat(str(part["dateTime"])[:10])
    return day.replace(tzinfo=zone).astimezone(UTC)
