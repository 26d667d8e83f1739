"""A burst of notifications becomes one read: a tenant woken by a notification
waits ``window`` seconds, then drains everything marked due meanwhile in one
go; what arrives while that read runs wakes it again, for one more read.

The marks themselves are persisted by the endpoint and keyed by kind and
mailbox (``state.notify_store``), so 100 notifications for one mailbox are
one mark before this even starts; a contact or calendar mark reads that
mailbox alone, never every mailbox of the tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daemon.errors import log_fields
from daemon.logging import get_logger
from daemon.scheduler import SchedulerClock
from daemon.sync.kinds import BUSY, CONTACT, USERS_POLL_KINDS
from state.notify_store import Due

log = get_logger(__name__)

DEFAULT_WINDOW_SECONDS = 1.0


@dataclass(frozen=True)
class Reads:
    """What one drain reads, through the one entry point: a run of ``directory`` (a user or group
    mark: the users and groups deltas, as the users poll reads them; a contact mark: the contacts of
    ``contacts``' mailboxes), the calendars of ``calendars`` (when ``BUSY`` is in ``since``), the
    keeper's round; a mailbox set of None reads every mailbox. ``since`` holds, per kind, when its
    earliest notification came."""

    directory: frozenset[str] = frozenset()
    contacts: frozenset[str] | None = None
    calendars: frozenset[str] | None = None
    keep: bool = False
    since: dict[str, float] = field(default_factory=dict)


def _mailboxes(due: list[Due], kind: str) -> frozenset[str] | None:
    """The mailboxes marked for ``kind``; None when a mark names no mailbox (read them all)."""
    named = [mark.mailbox for mark in due if mark.kind == kind]
    return None if None in named else frozenset(m for m in named if m is not None)


def reads_of(due: list[Due]) -> Reads:
    since: dict[str, float] = {}
    for mark in due:
        since[mark.kind] = min(mark.at, since.get(mark.kind, mark.at))
    directory = (USERS_POLL_KINDS if USERS_POLL_KINDS & since.keys() else frozenset()) | (
        frozenset({CONTACT}) & since.keys())
    return Reads(directory=directory, contacts=_mailboxes(due, CONTACT), calendars=_mailboxes(due, BUSY),
                 keep="keep" in since,
                 since={k: v for k, v in since.items() if k != "keep"})


class Debouncer:
    """One waiting task per woken tenant; ``drain(tenant)`` does the reads."""

    def __init__(self, clock: SchedulerClock, drain: Callable[[str], Awaitable[None]],
                 window: float = DEFAULT_WINDOW_SECONDS) -> None:
        self.clock = clock
        self.drain = drain
        self.window = window
        self._woken: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def wake(self, tenant: str) -> None:
        event = self._woken.setdefault(tenant, asyncio.Event())
        event.set()
        if tenant not in self._tasks or self._tasks[tenant].done():
            self._tasks[tenant] = asyncio.create_task(self._loop(tenant, event), name=f"notified-{tenant}")

    async def _loop(self, tenant: str, event: asyncio.Event) -> None:
        while True:
            await event.wait()
            await self.clock.sleep(self.window)  # the rest of the burst arrives meanwhile
            event.clear()
            try:
                await self.drain(tenant)
            except Exception as err:  # one failed read must not end the tenant's reads; the schedule is the backstop
                log.warning("a notified read failed", tenant=tenant, **log_fields(err))

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
