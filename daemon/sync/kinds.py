"""What to sync: a :class:`SyncRequest` names a tenant and kinds, and
:func:`build_pipelines` is the one factory of the pipelines that sync them.

Every pipeline has one shape: ``await pipeline.run(report)`` reads, plans,
logs its plan summary ("sync plan"), applies through the one applier and
reports into the one ``RunReport``; the pipelines of one request share the
tenant's Graph and PBX clients (:class:`Clients`).

Kinds: ``user``, ``group`` and ``contact`` are one pipeline (the users decide
whose mailboxes are read and which numbers are free), so a request for any of
them syncs all three, but a request without ``contact`` (the users poll,
``users.poll_seconds``) reads no mailbox; ``busy`` (calendar busy windows) is
its own, and only for a tenant with ``[tenants.events] enabled``; so is
``presence`` (Teams presence), with ``[tenants.presence] enabled``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from daemon.config import TenantConfig
from daemon.graph.client import GraphClient
from daemon.graph.clouds import cloud_of
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxWriter
from daemon.sync.apply import Progress
from daemon.sync.calendar import CalendarSync
from daemon.sync.presence import PresenceSync
from daemon.sync.report import RunReport
from daemon.sync.tenant import build_tenant_sync
from state.store import Store
from state.sync_store import SyncStore

BUSY = "busy"
CONTACT = "contact"
PRESENCE = "presence"
DIRECTORY_KINDS = frozenset({"user", "group", CONTACT})
ALL_KINDS = DIRECTORY_KINDS | {BUSY, PRESENCE}
# What a run syncs (the crontab, Sync now, an authorization, a takeover): busy windows and
# presence are kept fresh by their own polls, never by two syncs of a tenant at once.
RUN_KINDS = DIRECTORY_KINDS
POLL_KINDS = frozenset({BUSY})
PRESENCE_KINDS = frozenset({PRESENCE})
# The users poll (``users.poll_seconds``): the users and groups deltas, no mailbox read; a
# run (locked, recorded) since it writes users, queued on the tenant's schedule like any run.
USERS_POLL_KINDS = frozenset({"user", "group"})
USERS_POLL = "users-poll"  # the users poll's trigger
MAILBOX_POLL = "mailbox-poll"  # the mailbox backstop's: a slice of the mailboxes (``daemon.backstop``)


@dataclass(frozen=True)
class SyncRequest:
    """Sync ``kinds`` of ``tenant`` now, because of ``trigger`` (schedule, startup,
    sync-now, authorized, takeover, poll, a change notification); a notification names
    its ``mailboxes``, so only theirs are read."""

    tenant: str
    kinds: frozenset[str] = RUN_KINDS
    trigger: str = "sync-now"
    mailboxes: frozenset[str] | None = None  # whose contacts and calendars are read; None: every synced one

    @property
    def is_run(self) -> bool:
        """A run (locked, recorded in the run history) rather than a calendar or presence
        poll: those come every minute or faster, also during a run, and write one attribute."""
        return bool(self.kinds & DIRECTORY_KINDS)

    @property
    def routine(self) -> bool:
        """A poll's run (the users poll, a backstop slice): every minute, so one that changed
        nothing logs at debug and leaves no run record."""
        sliced = self.trigger in (USERS_POLL, MAILBOX_POLL) and self.mailboxes is not None  # the two joined, too
        return self.kinds == USERS_POLL_KINDS or sliced


def mailboxes_read(kinds: frozenset[str], mailboxes: frozenset[str] | None) -> frozenset[str] | None:
    """Whose contacts a run of ``kinds`` reads: nobody's without ``contact``; None: every mailbox's."""
    return mailboxes if CONTACT in kinds else frozenset()


def joined_mailboxes(kinds: frozenset[str], mailboxes: frozenset[str] | None, more_kinds: frozenset[str],
                     more_mailboxes: frozenset[str] | None) -> frozenset[str] | None:
    """The mailboxes one run reads for two requests joined in the schedule's queue."""
    first, second = mailboxes_read(kinds, mailboxes), mailboxes_read(more_kinds, more_mailboxes)
    return None if first is None or second is None else first | second


async def backstop_members(tenant: TenantConfig, sync_store: SyncStore, kind: str) -> list[str]:
    """Whose ``kind`` (``contact`` or ``busy``) the mailbox backstop goes round: the synced mailboxes
    (active synced users and shared mailboxes, as the state knows them), or the calendars read."""
    if kind == CONTACT:
        from daemon.sync.mailbox_contacts import stored_mailboxes  # imported by a run that has contacts

        return list(await stored_mailboxes(tenant, sync_store))
    return [user_id for user_id, _, _ in await sync_store.active_users(tenant.name)]


@dataclass(frozen=True)
class Clients:
    """A tenant's clients for one request, shared by its pipelines."""

    graph: GraphClient
    pbx: PbxClient  # reads (inventory, look-ups)
    writer: PbxWriter  # writes: the guarded client, or the dry run's


class Pipeline(Protocol):
    async def run(self, report: RunReport | None = None) -> RunReport: ...


@dataclass(frozen=True)
class PresenceClearing:
    """The presence a disabled presence sync left on the PBX, removed by a run."""

    presence: PresenceSync

    async def run(self, report: RunReport | None = None) -> RunReport:
        return await self.presence.clear(report)


def presence_available(tenant: TenantConfig) -> bool:
    """Presence is on, in a cloud that has it (check-config refuses it elsewhere)."""
    return tenant.presence.enabled and cloud_of(tenant).presence


@dataclass(frozen=True)
class BusyClearing:
    """The busy lists a disabled calendar sync left on the PBX, removed by a run."""

    calendar: CalendarSync

    async def run(self, report: RunReport | None = None) -> RunReport:
        return await self.calendar.clear(report)


def build_pipelines(kinds: frozenset[str], tenant: TenantConfig, store: Store, sync_store: SyncStore,
                    clients: Clients, now: Callable[[], float], progress: Progress | None = None, *,
                    all_photos: bool = False, mailboxes: frozenset[str] | None = None) -> list[Pipeline]:
    """The pipelines that sync ``kinds`` of ``tenant``, in the order they run; ``mailboxes``
    narrows the contacts and calendars read to theirs (a change notification's)."""
    pipelines: list[Pipeline] = []
    if kinds & DIRECTORY_KINDS == {CONTACT} and mailboxes is not None:  # a notified mailbox: its contacts alone
        from daemon.sync.mailbox_contacts import MailboxContactsSync  # imported by a run that has contacts

        pipelines.append(MailboxContactsSync(tenant, store, sync_store, clients.graph, clients.pbx, clients.writer,
                                             now, mailboxes))
    elif kinds & DIRECTORY_KINDS:
        pipelines.append(build_tenant_sync(tenant, store, sync_store, clients.graph, clients.pbx, clients.writer,
                                           now, progress, all_photos=all_photos, mailboxes=CONTACT in kinds,
                                           only=mailboxes))
    calendar = CalendarSync(tenant, store, sync_store, clients.graph, clients.writer, now, only=mailboxes)
    if BUSY in kinds and tenant.events.enabled:
        pipelines.append(calendar)
    elif kinds & DIRECTORY_KINDS and not tenant.events.enabled:  # turned off: what it pushed goes
        pipelines.append(BusyClearing(calendar))
    presence = PresenceSync(tenant, sync_store, clients.graph, clients.writer)
    if PRESENCE in kinds and presence_available(tenant):
        pipelines.append(presence)
    elif kinds & DIRECTORY_KINDS and not tenant.presence.enabled:  # turned off: what it pushed goes
        pipelines.append(PresenceClearing(presence))
    return pipelines
