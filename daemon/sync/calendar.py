"""Calendar busy windows, polled on their own short interval
(``events.poll_seconds``), independent of ``sync_time``, because an event
created five minutes ahead must reach the PBX before it starts.

A poll is the same pipeline shape as a run (built by the same factory,
``daemon.sync.kinds``): read (``read_calendar``), plan (``plan_busy``), the
plan summary logged, and the one applier (``/Bulk`` where the PBX supports
it), reporting into the run's ``RunReport``. Nothing of an event but its
times and ``showAs`` reaches the PBX.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from daemon.config import TenantConfig
from daemon.graph.client import GraphClient
from daemon.logging import get_logger
from daemon.pbx.types import PbxWriter
from daemon.sync.apply import Applier
from daemon.sync.plan_busy import plan_busy
from daemon.sync.read_calendar import read_calendars
from daemon.sync.read_mailboxes import mailbox_zones
from daemon.sync.report import RunReport
from daemon.sync.zones import AllDayPlacer
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)


@dataclass
class CalendarSync:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    writer: PbxWriter
    now: Callable[[], float] = time.time
    only: frozenset[str] | None = None  # read only these users' calendars (a change notification's); None: all

    async def run(self, report: RunReport | None = None) -> RunReport:
        """One poll of the busy windows; a calendar that cannot be read is reported, never raised."""
        report = report if report is not None else RunReport()
        name = self.tenant.name
        moment = datetime.fromtimestamp(self.now(), UTC)
        window_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        window_end = window_start + timedelta(days=self.tenant.events.window_days)
        users = [u for u in await self.sync_store.active_users(name) if self.only is None or u[0] in self.only]
        row = await self.store.tenant(name)
        read = await read_calendars(name, self.store, self.sync_store, self.graph, users, window_start, window_end,
                                    row.auth_changed_at if row is not None else None)
        report.busy.unreadable += read.unreadable
        report.busy.failures += read.failures
        report.failures += read.failures
        polled = [u for u in users if u[0] in read.read]
        events = await self.sync_store.copies_of_owners(name, "event", [u[0] for u in polled])
        states = await self.sync_store.calendar_states(name)
        placer = AllDayPlacer(name, self.tenant.timezone, await mailbox_zones(self.sync_store, name, [u[0] for u in polled]))
        plan = plan_busy(polled, events, {u: fp for u, (_, fp) in states.items()}, list(self.tenant.events.show_as),
                         moment, window_end, placer)
        writes = len(plan.ordered())
        # Logged like a run's plan; at debug when it writes nothing, since a poll comes every minute.
        (log.info if writes else log.debug)("sync plan", tenant=name, kinds=["busy"], changes=plan.summary(),
                                            writes=writes, held=len(plan.held))
        await Applier(name, self.sync_store, self.writer, report).apply(plan)
        return report

    async def clear(self, report: RunReport | None = None) -> RunReport:
        """``events.enabled`` turned off: remove the busy windows pushed before, so no call is
        blocked by a calendar no longer read. Only users with a pushed list are looked at."""
        report = report if report is not None else RunReport()
        name = self.tenant.name
        pushed = {u: fp for u, (_, fp) in (await self.sync_store.calendar_states(name)).items() if fp is not None}
        users = [u for u in await self.sync_store.active_users(name) if u[0] in pushed]
        if not users:
            return report
        moment = datetime.fromtimestamp(self.now(), UTC)
        plan = plan_busy(users, {}, pushed, [], moment, moment)  # no events: an empty list where one was pushed
        if plan.changes:
            log.info("busy windows cleared: events.enabled is off", tenant=name, users=len(plan.changes))
        await Applier(name, self.sync_store, self.writer, report).apply(plan)
        return report
