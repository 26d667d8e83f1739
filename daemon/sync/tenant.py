"""One sync run of a tenant, the one pipeline every kind goes through:

1. **read** (``read_*``): the users and groups deltas into the state
   database, shared mailboxes, photo versions, and the PBX inventory only when
   it is needed (a full round, numbers to allocate, or the daily
   reconciliation that catches changes made by hand on the PBX);
2. **snapshot** (``snapshot``): what the planners read, taken once;
3. **plan** (``plan_*``), pure: users first (every user, or only those
   changed or due: ``changed``) (they decide whose mailboxes are
   read), then the contacts of those mailboxes are read, then groups and
   contacts are planned; one number pool for users and groups, one guard
   (``guard``) for everything that disables or deletes;
4. the **plan summary** is logged before the first write;
5. **apply** (``apply``): one applier, in phases, for every kind;
6. **commit**: the deltaLinks, only now, so a crash anywhere repeats at most
   the unfinished part (every write is idempotent or journaled).

``build_tenant_sync`` is the one way the runner, the CLI and the daemon get one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from daemon.config import TenantConfig
from daemon.graph.client import GraphClient
from daemon.logging import get_logger
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxWriter
from daemon.sync.apply import Applier, Progress
from daemon.sync.changed import PLAN_INPUTS, UserSelection, needs_full_plan, plan_inputs_fingerprint, select_users
from daemon.sync.changed_kinds import (
    CONTACT_INPUTS,
    changed_mailboxes,
    contact_inputs_fingerprint,
    select_contacts,
    select_groups,
)
from daemon.sync.changes import Change, Plan
from daemon.sync.guard import guard, held_rows
from daemon.sync.intake import describe
from daemon.sync.known_numbers import TakenNumbers, known_inventory, remember_foreign
from daemon.sync.photos import PhotoBytes, photo_check_due, photo_due_at, photo_versions
from daemon.sync.plan_groups import plan_groups
from daemon.sync.plan_users import PlanInputs, UserPlanner
from daemon.sync.read_groups import GroupsRead, read_groups
from daemon.sync.read_mailboxes import shared_mailboxes, unreadable_settings
from daemon.sync.read_users import read_users
from daemon.sync.report import RunReport, summarize
from daemon.sync.scope import decide
from daemon.sync.snapshot import Inventory, Snapshot, read_inventory, take_snapshot, with_inventory
from state.store import Store
from state.sync_store import SyncStore

if TYPE_CHECKING:  # the contacts modules are imported by a run that has contacts to sync
    from daemon.sync.plan_contacts import Mailbox
    from daemon.sync.read_contacts import ContactsRead

log = get_logger(__name__)

INVENTORY_READ_AT = "inventory-read-at"
PLAN_MATCHES = "plan-matches"  # settings entries matched by some user, carried between partial plans
RECONCILE_SECONDS = 86400.0  # the PBX inventory is read at least daily


@dataclass
class TenantSync:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    pbx: PbxClient  # reads (inventory, look-ups); writes go through ``writer``
    writer: PbxWriter
    now: Callable[[], float]
    progress: Progress | None = None
    all_photos: bool = False  # check every photo this run (sync --photos), not only those due
    mailboxes: bool = True  # read and plan contacts; False: the users poll, the deltas of users and groups only
    only: frozenset[str] | None = None  # read only these mailboxes' contacts (every one is still planned)
    links: dict[tuple[str, str], str] = field(default_factory=dict)  # (resource, key) -> link to commit
    _inventory_read: bool = field(default=False, init=False)  # this run read the whole inventory
    planned_kinds: list[str] = field(default_factory=list)  # kinds whose dirty copies this run planned
    mailboxes_before: dict[str, tuple[str, str | None] | None] = field(default_factory=dict)  # planned users' before

    async def run(self, report: RunReport | None = None) -> RunReport:
        """One complete run; never raises for one object's failure.

        ``report`` is filled as writes are applied, so a caller that passes its
        own still has the counts when a later step raises."""
        report = report if report is not None else RunReport()
        tenant, name = self.tenant, self.tenant.name
        users_read = await read_users(tenant, self.store, self.sync_store, self.graph, self.progress)
        report.full_round, report.reconciled = users_read.full_round, users_read.reconciled
        if users_read.delta_link:
            self.links[("users", "")] = users_read.delta_link
        groups_read = await read_groups(tenant, self.store, self.sync_store, self.graph) if tenant.groups else GroupsRead()
        for rejected in users_read.rejected + groups_read.rejected:
            report.fail(rejected.kind, describe(rejected))
        report.groups.missing = groups_read.missing
        self.links.update({("groups", key): link for key, link in groups_read.links.items()})
        reconcile = users_read.full_round or await self._reconciliation_due()
        # the users merged since the last applied plan, read once for the partial steps below (none in a reconciliation)
        dirty = frozenset() if reconcile else frozenset(await self.sync_store.dirty_ids(name, "user"))
        shared = await shared_mailboxes(tenant, self.sync_store, self.graph, self.now, recheck=reconcile,
                                        changed=dirty) if tenant.shared_mailbox.enabled else {}
        if tenant.shared_mailbox.enabled:
            report.contacts.settings_unreadable = await unreadable_settings(self.sync_store, name)
        inventory = await self._read_inventory() if reconcile else None
        self._inventory_read = inventory is not None
        members = await self.sync_store.members_of(name, tenant.groups) if tenant.groups else set()
        inputs = plan_inputs_fingerprint(tenant, members, shared)
        full = await needs_full_plan(tenant, self.sync_store, inputs, reconcile=reconcile, all_photos=self.all_photos)
        snapshot = await take_snapshot(tenant, self.sync_store, inventory, self.now(), shared=shared,
                                       photos=await self._photo_versions(shared, members, full, dirty))
        selection = await select_users(tenant, self.sync_store, snapshot, full=full, changed=dirty)

        plan, users = await self._plan_users(snapshot, report, selection)
        new_users, new_groups = await self._needs_numbers(plan) if inventory is None else ((), ())
        if new_users or new_groups:  # plan again, knowing the numbers (and whether they are on the PBX)
            known = await known_inventory(self.sync_store, self.pbx, name, new_users, new_groups)
            self._inventory_read = known is None
            snapshot = await with_inventory(snapshot, self.sync_store, known or await self._read_inventory())
            plan, users = await self._plan_users(snapshot, report, selection)
        self.planned_kinds[:] = ["user"]
        await self._mark_changed_mailboxes(users, snapshot, plan)
        contact_inputs = contact_inputs_fingerprint(tenant, shared)
        # turned off with contacts still on the PBX: no mailbox is read, so the planner deletes them (guarded)
        # the users poll reads no mailbox: contacts wait for a run or the mailbox backstop
        if self.mailboxes and (tenant.personal_contacts.enabled or tenant.shared_mailbox.enabled or
                               await self.sync_store.count_synced(name, "contact")):
            contacts_read = await self._read_contacts(users, snapshot, report)
            plan.extend(await self._plan_contacts(users, snapshot, contacts_read, report, contact_inputs,
                                                  full=selection.full))
        plan.extend(await self._plan_groups(users, snapshot, plan, full=selection.full))
        guard(plan, tenant, snapshot.synced_counts, snapshot.approved, kinds=("group", "contact"))
        await self.sync_store.hold(name, held_rows(plan.held))
        summarize(name, plan, report)

        photos = PhotoBytes(tenant, self.graph) if tenant.users.sync_photo else None
        writer = TakenNumbers(self.writer)
        await Applier(name, self.sync_store, writer, report, self.progress, photos).apply(plan)
        if writer.refused and not self._inventory_read:
            await self._number_again(writer.refused, snapshot, report, photos)
        await self._commit(users, inputs, contact_inputs)
        if plan.held:
            report.result = "deprovisions_held"
            log.warning("deprovisions held by the mass-deletion guard", tenant=name, held=len(plan.held),
                        action=f"m365sync approve --tenant {name}")
        elif report.failures:
            report.result = "partial"
        return report

    # --- the PBX inventory: only when it is needed ---

    async def _reconciliation_due(self) -> bool:
        """Daily, the inventory is read even without a need, to catch changes made by hand on the PBX."""
        last = await self.sync_store.timestamp(self.tenant.name, INVENTORY_READ_AT)
        return last is None or self.now() - last >= RECONCILE_SECONDS

    async def _read_inventory(self) -> Inventory:
        inventory = await read_inventory(self.pbx)
        self._inventory_read = True
        await remember_foreign(self.sync_store, self.tenant.name, inventory)
        await self.sync_store.set_timestamp(self.tenant.name, INVENTORY_READ_AT, self.now())
        return inventory

    async def _needs_numbers(self, plan: Plan) -> tuple[set[str], set[str]]:
        """New users, and configured groups not on the PBX yet: they need numbers (and may be there)."""
        users = {c.graph_id for c in plan.changes if c.kind == "user" and c.action == "create"}
        if self.tenant.groups_starting_extension_number is None or not self.tenant.groups:
            return users, set()
        on_pbx = await self.sync_store.pbx_ids(self.tenant.name, "group")
        return users, {group for group in self.tenant.groups if group not in on_pbx}

    async def _number_again(self, refused: Mapping[str, set[str]], snapshot: Snapshot, report: RunReport,
                            photos: PhotoBytes | None) -> None:
        """Creates the PBX refused for a number held there unknown to the state: the inventory is read
        (once: the run's second apply sees every number) and they are numbered and sent again. Groups
        not on the PBX are planned again anyway; the users refused are planned despite their failure."""
        log.info("numbers taken on the PBX since its last read; reading its numbers and numbering again",
                 tenant=self.tenant.name, users=len(refused.get("User", ())), groups=len(refused.get("Group", ())))
        snapshot = await with_inventory(snapshot, self.sync_store, await self._read_inventory())
        retried = frozenset(refused.get("User", ()))
        unmatched = report.unmatched_selected
        plan, users = await self._plan_users(snapshot, report, UserSelection(full=False, ids=retried), retried)
        report.unmatched_selected = unmatched
        plan.extend(await self._plan_groups(users, snapshot, plan, full=False))  # those not on the PBX are selected
        await Applier(self.tenant.name, self.sync_store, self.writer, report, self.progress, photos).apply(plan)
        for kind, ids in refused.items():  # written after all: the first refusal is no failure of the run
            on_pbx = await self.sync_store.pbx_ids(self.tenant.name, kind.lower())
            for graph_id in ids & on_pbx.keys():
                report.withdraw(kind.lower(), f"{kind} {graph_id} was not written")

    # --- planning ---

    async def _plan_users(self, snapshot: Snapshot, report: RunReport, selection: UserSelection,
                          retried: frozenset[str] = frozenset()) -> tuple[Plan, UserPlanner]:
        inputs = PlanInputs(
            tenant=self.tenant, now=snapshot.now, group_members=snapshot.members_in_scope,
            pbx_numbers=frozenset(snapshot.inventory.numbers), pbx_by_external_id=snapshot.inventory.users,
            allocations=snapshot.allocations, photos=snapshot.photos,
            shared_mailboxes=frozenset(snapshot.shared_mailboxes),
            pending_creates=snapshot.pending_creates.get("user", frozenset()),
        )
        name = self.tenant.name
        planner = UserPlanner(inputs, track_active=self.tenant.personal_contacts.enabled)
        self.mailboxes_before.clear()
        if selection.full:
            if planner.track_active:  # who had a mailbox before: a full plan may change anyone's
                self.mailboxes_before.update({graph_id: (upn, pbx_id)
                                              for graph_id, pbx_id, upn in await self.sync_store.active_users(name)})
            async for copy, synced in self.sync_store.iter_with_synced(name, "user"):
                if copy is not None:
                    self.mailboxes_before.setdefault(copy.id, None)
                planner.add(copy, synced)
        else:
            planner.seed_matches(json.loads(await self.sync_store.value(name, PLAN_MATCHES) or "[]"))
            if planner.track_active:  # users not planned stay as they are on the PBX
                planner.active.update({graph_id: (upn, pbx_id)
                                       for graph_id, pbx_id, upn in await self.sync_store.active_users(name)})
            async for copy, synced in self.sync_store.iter_with_synced_of(name, "user", selection.ids):
                self.mailboxes_before[copy.id] = planner.active.pop(copy.id, None)
                planner.add(copy, replace(synced, failures=0) if synced and copy.id in retried else synced)
        plan = planner.finish()
        for graph_id, quarantined in selection.held_back:
            (plan.quarantined if quarantined else plan.waiting).append(("user", graph_id))
        report.unmatched_selected = planner.unmatched_selected
        # Users first: a held disable keeps its user (and so its mailbox) active.
        guard(plan, self.tenant, snapshot.synced_counts, snapshot.approved, kinds=("user",))
        for change in plan.held:
            if change.action == "disable" and change.operation.pbx_id:
                planner.active[change.graph_id] = (change.label, change.operation.pbx_id)
        return plan, planner

    async def _plan_groups(self, users: UserPlanner, snapshot: Snapshot, plan: Plan, *, full: bool) -> Plan:
        name = self.tenant.name
        selection = await select_groups(self.tenant, self.sync_store, snapshot, plan, full=full)
        self.planned_kinds.append("group")
        if selection.full:
            synced = await self.sync_store.synced_rows(name, "group")
            wanted = set(self.tenant.groups) | set(synced)
        else:
            synced = await self.sync_store.synced_of(name, "group", selection.ids)
            wanted = set(selection.ids)
        if not wanted:
            return Plan()
        pbx_ids = {external: entry.pbx_id for external, entry in snapshot.inventory.users.items()}
        pbx_ids.update(await self.sync_store.pbx_ids(name, "user"))
        created = {c.graph_id for c in plan.changes if c.kind == "user" and c.action == "create"}
        leaving = {c.graph_id for c in plan.changes if c.kind == "user" and c.action == "delete"}
        copies = await self.sync_store.graph_copies(name, "group", wanted)
        return plan_groups(snapshot, copies, synced, pbx_ids, created, leaving, users.pool,
                           only=None if selection.full else wanted)

    def _mailboxes(self, users: UserPlanner, snapshot: Snapshot) -> dict[str, Mailbox]:
        """Whose contacts go to the PBX: users active after this run, and shared mailboxes."""
        from daemon.sync.plan_contacts import synced_mailboxes

        return synced_mailboxes(self.tenant, users.active, snapshot.shared_mailboxes)

    async def _read_contacts(self, users: UserPlanner, snapshot: Snapshot, report: RunReport) -> ContactsRead:
        """Every synced mailbox's contacts, or only those of ``only`` (a notified read queued with a run)."""
        from daemon.sync.mailbox_contacts import read_contacts

        mailboxes = [m for m in self._mailboxes(users, snapshot).values() if self.only is None or m.user_id in self.only]
        read = await read_contacts(self.tenant, self.store, self.sync_store, self.graph, self.now(), mailboxes, report)
        self.links.update({("contacts", key): link for key, link in read.links.items()})
        return read

    async def _plan_contacts(self, users: UserPlanner, snapshot: Snapshot, read: ContactsRead,
                             report: RunReport, inputs: str, *, full: bool) -> Plan:
        from daemon.sync.mailbox_contacts import plan_selected

        selection = await select_contacts(self.tenant, self.sync_store, snapshot, inputs, full=full)
        self.planned_kinds.append("contact")
        return await plan_selected(self.tenant, self.sync_store, self.pbx, self.now(), self._mailboxes(users, snapshot),
                                   snapshot.pending_creates.get("contact", frozenset()), read, report, selection)

    async def _mark_changed_mailboxes(self, users: UserPlanner, snapshot: Snapshot, plan: Plan) -> None:
        """The contacts of planned users whose mailbox changed are planned again (``changed_kinds``)."""
        if not (self.tenant.personal_contacts.enabled or self.tenant.shared_mailbox.enabled):
            return
        owners = changed_mailboxes(self.mailboxes_before, users.active, plan, set(snapshot.shared_mailboxes),
                                   self.mailboxes_before)
        if owners:
            await self.sync_store.mark_owned_dirty(self.tenant.name, "contact", owners)

    async def _photo_versions(self, shared: dict[str, str], members: set[str], full: bool,
                              dirty: frozenset[str]) -> dict[str, str | None]:
        """mediaEtags of the users in scope whose check is due (only when photos are synced): found
        among every copy in a full plan, else among the checks due and the changed users never checked."""
        tenant = self.tenant
        if not (tenant.users.sync_photo and tenant.users.enabled):
            return {}
        now, hours = self.now(), 0 if self.all_photos else tenant.users.photo_check_hours
        if full or hours == 0:
            checked = await self.sync_store.photo_checks(tenant.name)
            copies = self.sync_store.iter_copies(tenant.name, "user")
            due = [copy async for copy in copies if photo_check_due(copy.id, checked.get(copy.id), now, hours)]
        else:
            ids = await self.sync_store.photo_checks_due(tenant.name, now)
            ids |= dirty - await self.sync_store.photo_checked(tenant.name, dirty)
            due = list((await self.sync_store.graph_copies(tenant.name, "user", sorted(ids))).values())
        candidates = [copy.id for copy in due
                      if decide(copy.data, copy.removed, tenant, members, frozenset(shared)).active]
        versions = await photo_versions(self.graph, candidates)
        await self.sync_store.set_photo_checks(tenant.name, {user: photo_due_at(user, now, hours) for user in versions})
        return versions

    # --- commit ---

    async def _commit(self, users: UserPlanner, inputs: str, contact_inputs: str) -> None:
        """The deltaLinks, once every write of the run was tried, with what its user plan was made from
        (``changed``): the users it planned are no longer dirty, its inputs are the next run's baseline."""
        by_resource: dict[str, dict[str, str]] = {}
        for (resource, key), link in self.links.items():
            by_resource.setdefault(resource, {})[key] = link
        values = {PLAN_MATCHES: json.dumps(users.matches()), PLAN_INPUTS: inputs}
        if "contact" in self.planned_kinds:
            values[CONTACT_INPUTS] = contact_inputs
        await self.sync_store.commit_run(self.tenant.name, by_resource, values, planned=self.planned_kinds)
        self.links.clear()


def build_tenant_sync(tenant: TenantConfig, store: Store, sync_store: SyncStore, graph: GraphClient, pbx: PbxClient,
                      writer: PbxWriter, now: Callable[[], float], progress: Progress | None = None, *,
                      all_photos: bool = False, mailboxes: bool = True, only: frozenset[str] | None = None
                      ) -> TenantSync:
    """The one way to get a run's pipeline (runner, CLI, daemon and tests)."""
    return TenantSync(tenant, store, sync_store, graph, pbx, writer, now, progress, all_photos, mailboxes, only)


__all__ = ["Change", "TenantSync", "build_tenant_sync"]
