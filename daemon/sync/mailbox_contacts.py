"""The contacts steps of a run (read, then plan), and the run of a few
mailboxes' contacts alone: what a change notification for a mailbox asks
for, and each slice of the mailbox backstop (``SyncRequest.mailboxes``). A
notified contact so costs that mailbox's contacts delta (one ``$batch`` item
per folder) and a plan of what changed, not the whole directory run that
reads every mailbox.

The narrowed run reads neither the users nor the groups delta: the users
poll and the runs keep those, and decide whose mailboxes are synced; here a
mailbox counts when the state says so (an active synced user's, or a shared
mailbox). It plans what a partial run's contacts plan would
(``changed_kinds``): the dirty contacts (those its read merged, and those of
a mailbox the users poll saw change, e.g. a leaver's, which go), failed ones
whose retry is due, journaled creates and held deprovisions, and marks them
planned (no longer dirty), so the next run does not plan them again.
Contacts on the PBX whose stored copy is gone are planned when they are
among those (by id, from their indexes: a failed, held or journaled one);
any other is left to the full runs, which plan every contact. A pushed
contact's row names no owner (``synced_objects`` has no owner column), so
finding a mailbox's pushed contacts without a copy means comparing every
pushed contact of the tenant with the copies: the full plan's work, not a
slice's. (In normal operation a copy goes only with its pushed
row, ``state.pushed``: it takes a state edited or restored by hand.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

from daemon.config import TenantConfig
from daemon.graph.client import GraphClient
from daemon.logging import get_logger
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxWriter
from daemon.sync.apply import Applier
from daemon.sync.changed import UserSelection, due_selection
from daemon.sync.changes import Plan
from daemon.sync.guard import guard, held_rows
from daemon.sync.intake import describe
from daemon.sync.plan_contacts import ContactPlanner, Mailbox, synced_mailboxes
from daemon.sync.read_contacts import ContactsRead, ContactsReader
from daemon.sync.report import RunReport, summarize
from daemon.sync.snapshot import Inventory, Snapshot, read_inventory
from daemon.sync.user_scope import stored_shared_mailboxes
from state.store import Store
from state.sync_store import GraphCopy, SyncedRow, SyncStore

log = get_logger(__name__)

Rows = AsyncIterator[tuple[GraphCopy | None, SyncedRow | None]]


async def read_contacts(tenant: TenantConfig, store: Store, sync_store: SyncStore, graph: GraphClient, now: float,
                        mailboxes: Iterable[Mailbox], report: RunReport) -> ContactsRead:
    """Read these mailboxes' contacts into the stored copies; what failed goes to the report."""
    row = await store.tenant(tenant.name)
    reader = ContactsReader(tenant, store, sync_store, graph,
                            authorized_at=row.auth_changed_at if row is not None else None, now=now)
    read = await reader(list(mailboxes))
    report.contacts.unreadable = read.unreadable
    for failure in read.failures:
        report.fail("contact", failure)
    for rejected in read.rejected:
        report.fail("contact", describe(rejected))
    return read


async def plan_contacts(tenant: TenantConfig, pbx: PbxClient, now: float, mailboxes: Mapping[str, Mailbox],
                        pending_creates: frozenset[str], read: ContactsRead, report: RunReport, rows: Rows) -> Plan:
    """Plan the contacts of ``rows`` (contacts of mailboxes not in ``mailboxes`` are deleted)."""
    on_pbx: dict[str, str] = {}
    if read.full_rounds:  # folders read from scratch: their contacts may be on the PBX, unrecorded
        on_pbx = (await read_inventory(pbx, contacts=True)).contacts
    planner = ContactPlanner(tenant, mailboxes, pending_creates, on_pbx, now)
    async for copy, synced in rows:
        planner.add(copy, synced)
    report.contacts.skipped_without_phone = planner.skipped_without_phone
    return planner.finish()


async def plan_selected(tenant: TenantConfig, sync_store: SyncStore, pbx: PbxClient, now: float,
                        mailboxes: Mapping[str, Mailbox], pending_creates: frozenset[str], read: ContactsRead,
                        report: RunReport, selection: UserSelection) -> Plan:
    """Plan the contacts ``selection`` names (every one when it is full); the failed ones it held
    back are counted as waiting or quarantined."""
    plan = await plan_contacts(tenant, pbx, now, mailboxes, pending_creates, read, report,
                               selected_rows(sync_store, tenant.name, selection))
    stored = await sync_store.known_ids(tenant.name, "contact", [graph_id for graph_id, _ in selection.held_back])
    for graph_id, quarantined in selection.held_back:  # one refused at its read (no copy) waits unreported
        if graph_id in stored:
            (plan.quarantined if quarantined else plan.waiting).append(("contact", graph_id))
    return plan


async def selected_rows(sync_store: SyncStore, name: str, selection: UserSelection) -> Rows:
    """The contacts a plan covers: every one, or those selected (``changed_kinds``, by an index),
    with the pushed ones among them whose copy is gone."""
    if selection.full:
        async for pair in sync_store.iter_with_synced(name, "contact"):
            yield pair
        return
    seen: set[str] = set()
    async for copy, found in sync_store.iter_with_synced_of(name, "contact", selection.ids):
        seen.add(copy.id)
        yield copy, found
    for row in (await sync_store.synced_of(name, "contact", selection.ids - seen)).values():
        yield None, row  # pushed, its copy gone


async def stored_mailboxes(tenant: TenantConfig, sync_store: SyncStore) -> dict[str, Mailbox]:
    """The mailboxes whose contacts are synced, as the state knows them (no Graph request)."""
    active = {user_id: (upn, pbx_id) for user_id, pbx_id, upn in await sync_store.active_users(tenant.name)}
    return synced_mailboxes(tenant, active, await stored_shared_mailboxes(tenant, sync_store))


@dataclass
class MailboxContactsSync:
    """One run of the contacts of ``only`` (mailbox user ids), through the one applier."""

    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    pbx: PbxClient
    writer: PbxWriter
    now: Callable[[], float]
    only: frozenset[str]

    async def run(self, report: RunReport | None = None) -> RunReport:
        report = report if report is not None else RunReport()
        name = self.tenant.name
        mailboxes = await stored_mailboxes(self.tenant, self.sync_store)
        wanted = [mailbox for user_id, mailbox in mailboxes.items() if user_id in self.only]
        if not wanted:  # not (or no longer) synced: nothing of theirs is read
            log.info("notified mailboxes are not synced; nothing read", tenant=name, mailboxes=len(self.only))
            return report
        read = await read_contacts(self.tenant, self.store, self.sync_store, self.graph, self.now(), wanted, report)
        held = await self.sync_store.held(name)
        pending = frozenset(await self.sync_store.pending_creates(name, "contact"))
        selection = await self._selection(held, pending)
        plan = await plan_selected(self.tenant, self.sync_store, self.pbx, self.now(), mailboxes, pending, read,
                                   report, selection)
        guard(plan, self.tenant, {"contact": await self.sync_store.count_synced(name, "contact")},
              [graph_id for graph_id, (_, _, approved) in held.items() if approved], kinds=("contact",))
        others = {graph_id: (kind, action) for graph_id, (kind, action, _) in held.items()
                  if graph_id not in selection.ids}
        await self.sync_store.hold(name, {**others, **held_rows(plan.held)})  # the rest of the held set stays
        summarize(name, plan, report)
        await Applier(name, self.sync_store, self.writer, report).apply(plan)
        # every dirty contact was planned: none is planned again by the next run
        await self.sync_store.commit_run(name, {"contacts": read.links}, {}, planned=["contact"])
        if plan.held:
            report.result = "deprovisions_held"
        elif report.failures:
            report.result = "partial"
        return report

    async def _selection(self, held: Mapping[str, tuple[str, str, bool]], pending: frozenset[str]) -> UserSelection:
        """What a partial run's contacts plan would select (``changed_kinds``), never every contact."""
        snapshot = Snapshot(tenant=self.tenant, now=self.now(), inventory=Inventory(), allocations=(),
                            group_members={}, held=held, synced_counts={}, shared_mailboxes={}, photos={},
                            pending_creates={"contact": pending})
        dirty = await self.sync_store.dirty_ids(self.tenant.name, "contact")
        return await due_selection(self.tenant, self.sync_store, snapshot, "contact", dirty)
