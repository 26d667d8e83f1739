"""The contacts steps of a run (read, then plan), and the run of a few
mailboxes' contacts alone: what a change notification for a mailbox asks
for (``SyncRequest.mailboxes``). A notified contact so costs that mailbox's
contacts delta (one ``$batch`` item per folder) and a plan of its contacts,
not the whole directory run that reads every mailbox.

The narrowed run reads neither the users nor the groups delta: the users
poll and the runs keep those, and decide whose mailboxes are synced; here a
mailbox counts when the state says so (an active synced user's, or a shared
mailbox). Contacts on the PBX whose stored copy is gone are left to the full
runs, which plan every contact.
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
from daemon.sync.changes import Plan
from daemon.sync.guard import guard, held_rows
from daemon.sync.intake import describe
from daemon.sync.plan_contacts import ContactPlanner, Mailbox, synced_mailboxes
from daemon.sync.read_contacts import ContactsRead, ContactsReader
from daemon.sync.report import RunReport, summarize
from daemon.sync.snapshot import read_inventory
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
        mailboxes = await self._mailboxes()
        if not mailboxes:  # not (or no longer) synced: nothing of theirs is read
            log.info("notified mailboxes are not synced; nothing read", tenant=name, mailboxes=len(self.only))
            return report
        read = await read_contacts(self.tenant, self.store, self.sync_store, self.graph, self.now(),
                                   mailboxes.values(), report)
        planned: set[str] = set()

        async def rows() -> Rows:
            async for copy, synced in self.sync_store.iter_with_synced_of_owners(name, "contact", mailboxes):
                planned.add(copy.id)
                yield copy, synced

        pending = frozenset(await self.sync_store.pending_creates(name, "contact"))
        plan = await plan_contacts(self.tenant, self.pbx, self.now(), mailboxes, pending, read, report, rows())
        held = await self.sync_store.held(name)
        guard(plan, self.tenant, {"contact": await self.sync_store.count_synced(name, "contact")},
              [graph_id for graph_id, (_, _, approved) in held.items() if approved], kinds=("contact",))
        others = {graph_id: (kind, action) for graph_id, (kind, action, _) in held.items() if graph_id not in planned}
        await self.sync_store.hold(name, {**others, **held_rows(plan.held)})  # the rest of the held set stays
        summarize(name, plan, report)
        await Applier(name, self.sync_store, self.writer, report).apply(plan)
        await self.sync_store.commit_run(name, {"contacts": read.links}, {}, planned=[])
        if plan.held:
            report.result = "deprovisions_held"
        elif report.failures:
            report.result = "partial"
        return report

    async def _mailboxes(self) -> dict[str, Mailbox]:
        """The mailboxes of ``only`` whose contacts are synced, as the state knows them."""
        active = {user_id: (upn, pbx_id) for user_id, pbx_id, upn in await self.sync_store.active_users(self.tenant.name)
                  if user_id in self.only}
        shared = await stored_shared_mailboxes(self.tenant, self.sync_store)
        return {u: m for u, m in synced_mailboxes(self.tenant, active, shared).items() if u in self.only}
