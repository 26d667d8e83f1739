"""A tenant's fixed-interval polls, besides its crontab runs (``sync_time``,
the full reconciliation):

- **users** (``users.poll_seconds``, 60 s): the users and groups deltas, one
  request each when nothing changed, so a new hire or a leaver reaches the PBX
  within a minute; a run (it writes users), so it is queued on the tenant's
  schedule and never runs beside another run;
- **mailboxes** (``personal_contacts.poll_seconds``, 30 min): the backstop of
  the mailboxes' contacts, spread over its interval: every minute a run of
  the contacts of one slice of the synced mailboxes (``daemon.backstop``:
  ordered by id, a cursor going round them once per interval), so each
  mailbox is read once per interval and the Graph requests a minute stay
  flat (at 10k mailboxes and 30 minutes, 334 mailboxes, about 17
  ``$batch``, a minute) instead of one run reading every mailbox at once.
  Folder listings keep their own cadence (``folder_refresh_hours``): a
  slice lists the folders of those of its mailboxes that are due;
- **calendar** (``events.poll_seconds``) and **presence**
  (``presence.poll_seconds``): one attribute of each user, not runs. While
  change notifications cover every calendar (each has an active
  subscription), a calendar change is read when it is notified, and the
  calendar poll is the calendars' backstop: each tick reads one slice of
  them (the same rounds), every calendar once per
  ``personal_contacts.poll_seconds``. Without notifications it reads every
  calendar each ``events.poll_seconds``.

Every poll asks the one entry point, ``Supervisor.sync_now``, either directly
(calendar, presence) or through the schedule's queue (users, mailboxes),
where a slice joins a run already queued (the run then reads the slice's
mailboxes too, or every mailbox if it is a whole run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from daemon.backstop import Rounds
from daemon.config import TenantConfig
from daemon.metrics import Metrics
from daemon.scheduler import PollLoop, SchedulerClock, TenantSchedule
from daemon.sync.kinds import (
    BUSY,
    CONTACT,
    MAILBOX_POLL,
    POLL_KINDS,
    PRESENCE_KINDS,
    USERS_POLL,
    USERS_POLL_KINDS,
    SyncRequest,
    presence_available,
)

SyncNow = Callable[[SyncRequest], Awaitable[str]]
Members = Callable[[str], Awaitable[list[str]]]  # kind (contact, busy) -> whose the backstop goes round

__all__ = ["MAILBOX_POLL", "USERS_POLL", "poll_settings", "tenant_polls"]


def tenant_polls(tenant: TenantConfig, schedule: TenantSchedule | None, sync_now: SyncNow, clock: SchedulerClock,
                 metrics: Metrics, members: Members, pushed: Callable[[str], bool] = lambda kind: False
                 ) -> list[PollLoop]:
    """The polls ``tenant``'s settings ask for (not started); ``members(kind)``: the mailboxes the
    backstop goes round; ``pushed(kind)``: change notifications cover every mailbox of that kind now."""
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

    def backstop(rounds: Rounds, on_schedule: TenantSchedule) -> Callable[[], Awaitable[None]]:
        async def poll() -> None:  # one slice of the synced mailboxes' contacts, a run queued like the others
            chosen = frozenset(rounds.next_slice(await members(CONTACT), clock.monotonic()))
            if chosen:
                await on_schedule.wait(on_schedule.request(MAILBOX_POLL, kinds=frozenset({CONTACT}), mailboxes=chosen))

        return poll

    def calendar(rounds: Rounds) -> Callable[[], Awaitable[None]]:
        async def poll() -> None:  # pushed: one slice, as the calendars' backstop; otherwise every calendar
            if not pushed(BUSY):
                rounds.restart()  # once pushed again, a round starts from the first calendar
                await sync_now(SyncRequest(name, POLL_KINDS, "poll"))
                return
            chosen = frozenset(rounds.next_slice(await members(BUSY), clock.monotonic()))
            if chosen:
                await sync_now(SyncRequest(name, POLL_KINDS, "poll", chosen))

        return poll

    if tenant.events.enabled:
        rounds = Rounds(tenant.personal_contacts.poll_seconds, tenant.events.poll_seconds)
        loops.append(PollLoop(f"calendar-{name}", tenant.events.poll_seconds, calendar(rounds), clock,
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
            slices = Rounds(tenant.personal_contacts.poll_seconds)
            loops.append(PollLoop(f"mailboxes-{name}", slices.tick, backstop(slices, schedule), clock,
                                  metrics.directory_polls_skipped.labels(name, "mailboxes").inc,
                                  first_after_interval=True))
    return loops


def poll_settings(tenant: TenantConfig) -> tuple[object, ...]:
    """What the polls are built from: a reload that changes any of it restarts them."""
    return (tenant.events, tenant.presence, tenant.national_cloud, tenant.users.poll_seconds,
            tenant.personal_contacts.enabled, tenant.personal_contacts.poll_seconds, tenant.shared_mailbox.enabled)
