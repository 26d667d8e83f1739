"""A tenant's fixed-interval polls, besides its crontab runs (``sync_time``,
the full reconciliation):

- **users** (``users.poll_seconds``, 60 s): the users and groups deltas, one
  request each when nothing changed, so a new hire or a leaver reaches the PBX
  within a minute; a run (it writes users), so it is queued on the tenant's
  schedule and never runs beside another run;
- **mailboxes** (``personal_contacts.poll_seconds``, 30 min): a whole run,
  contacts included, as the backstop of the mailboxes' contacts;
- **calendar** (``events.poll_seconds``) and **presence**
  (``presence.poll_seconds``): one attribute of each user, not runs. While
  change notifications cover every calendar (each has an active
  subscription), a calendar change is read when it is notified, and the
  calendar poll reads only every ``personal_contacts.poll_seconds``, as the
  mailboxes' backstop: at 10k users every minute would be 500 ``$batch``es.

Every poll asks the one entry point, ``Supervisor.sync_now``, either directly
(calendar, presence) or through the schedule's queue (users, mailboxes).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from daemon.config import TenantConfig
from daemon.metrics import Metrics
from daemon.scheduler import PollLoop, SchedulerClock, TenantSchedule
from daemon.sync.kinds import (
    BUSY,
    POLL_KINDS,
    PRESENCE_KINDS,
    RUN_KINDS,
    USERS_POLL_KINDS,
    SyncRequest,
    presence_available,
)

SyncNow = Callable[[SyncRequest], Awaitable[str]]

USERS_POLL = "users-poll"
MAILBOX_POLL = "mailbox-poll"


def tenant_polls(tenant: TenantConfig, schedule: TenantSchedule | None, sync_now: SyncNow, clock: SchedulerClock,
                 metrics: Metrics, pushed: Callable[[str], bool] = lambda kind: False) -> list[PollLoop]:
    """The polls ``tenant``'s settings ask for (not started); ``pushed(kind)``: change notifications
    cover every mailbox of that kind now."""
    name = tenant.name
    loops: list[PollLoop] = []

    def direct(request: SyncRequest) -> Callable[[], Awaitable[None]]:
        async def poll() -> None:
            await sync_now(request)

        return poll

    def queued(trigger: str, kinds: frozenset[str], on_schedule: TenantSchedule) -> Callable[[], Awaitable[None]]:
        async def poll() -> None:  # waits for the run, so an overrunning one skips ticks, never stacks them
            await on_schedule.wait(on_schedule.request(trigger, kinds=kinds))

        return poll

    def calendar() -> Callable[[], Awaitable[None]]:
        last_read = [-math.inf]

        async def poll() -> None:  # pushed: only as the backstop, every personal_contacts.poll_seconds
            now = clock.monotonic()
            if pushed(BUSY) and now - last_read[0] < tenant.personal_contacts.poll_seconds:
                return
            last_read[0] = now
            await sync_now(SyncRequest(name, POLL_KINDS, "poll"))

        return poll

    if tenant.events.enabled:
        loops.append(PollLoop(f"calendar-{name}", tenant.events.poll_seconds, calendar(), clock,
                              metrics.calendar_polls_skipped.labels(name).inc))
    if presence_available(tenant):
        loops.append(PollLoop(f"presence-{name}", tenant.presence.poll_seconds,
                              direct(SyncRequest(name, PRESENCE_KINDS, "presence-poll")), clock,
                              metrics.presence_polls_skipped.labels(name).inc))
    if schedule is not None:
        loops.append(PollLoop(f"users-{name}", tenant.users.poll_seconds,
                              queued(USERS_POLL, USERS_POLL_KINDS, schedule), clock,
                              metrics.directory_polls_skipped.labels(name, "users").inc, first_after_interval=True))
        if tenant.personal_contacts.enabled or tenant.shared_mailbox.enabled:
            loops.append(PollLoop(f"mailboxes-{name}", tenant.personal_contacts.poll_seconds,
                                  queued(MAILBOX_POLL, RUN_KINDS, schedule), clock,
                                  metrics.directory_polls_skipped.labels(name, "mailboxes").inc,
                                  first_after_interval=True))
    return loops


def poll_settings(tenant: TenantConfig) -> tuple[object, ...]:
    """What the polls are built from: a reload that changes any of it restarts them."""
    return (tenant.events, tenant.presence, tenant.national_cloud, tenant.users.poll_seconds,
            tenant.personal_contacts.enabled, tenant.personal_contacts.poll_seconds, tenant.shared_mailbox.enabled)
