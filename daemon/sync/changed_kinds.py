"""Which contacts and groups a run plans: all of them, or only what changed and what is due.

Like the users (``changed``), a run plans a kind **whole** when its users
plan is whole (the daily reconciliation, a full users round, changed plan
inputs, ``sync --photos``), and contacts also when their own inputs changed
(``contact_inputs_fingerprint``: the contacts settings, the mapping code,
which users are shared mailboxes; stored once a contacts plan made from
them was applied). Otherwise it plans, each set found by an index:

- copies merged or removed since the last applied plan (``dirty``): a
  changed contact, a contact of a folder that went, a group whose
  properties or members changed (Graph returns the group with its
  ``members@delta``);
- **contacts of a mailbox that changed**: a user who became active or left,
  was created or renamed (his personal contacts carry his UPN and PBX id),
  and a shared mailbox that changed. Their copies are marked dirty by the
  owner index (``mark_owned_dirty``) in the run the user is planned, so a
  users poll that plans no contact leaves them for the next run that does;
- **groups of a member whose PBX id came or went**: a user created or
  deleted in this run (the group's members are PBX ids);
- configured groups not on the PBX yet, and groups on the PBX no longer
  configured (from the pushed ids, no payload decoded); with
  ``groups_transitive`` every configured group (their members are listed
  every run, no delta says which changed);
- failed objects whose retry is due, journaled creates, held deprovisions.

The mass-deletion guard needs only the synced counts (``count_synced``) and
the deprovisions planned, and every deprovision a full plan would make is of
a dirty or due object, so it holds the same changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Set

from daemon.config import TenantConfig
from daemon.sync.changed import UserSelection, due_selection
from daemon.sync.changes import Plan
from daemon.sync.plan_users import MAPPING_CODE
from daemon.sync.snapshot import Snapshot
from state.sync_store import SyncStore

CONTACT_INPUTS = "contact-plan-inputs"  # marker: the fingerprint of the inputs of the last applied contacts plan

Active = Mapping[str, tuple[str, str | None]]  # user id -> (UPN, PBX id or None if created in this run)


def contact_inputs_fingerprint(tenant: TenantConfig, shared: Iterable[str]) -> str:
    """What every contact's plan depends on besides the contact and its user (see the module docstring)."""
    relevant = {
        "code": MAPPING_CODE,
        "personal": tenant.personal_contacts.model_dump(mode="json"),
        "shared_mailbox": tenant.shared_mailbox.model_dump(mode="json"),
        "shared": hashlib.sha256("\n".join(sorted(shared)).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:32]


def changed_mailboxes(before: Mapping[str, tuple[str, str | None] | None], after: Active, plan: Plan,
                      shared: Set[str], planned: Iterable[str]) -> set[str]:
    """The planned users whose mailbox is not what it was: active or not, its PBX id, its UPN (a rename is an
    update of ``userName``), and planned shared mailboxes (their UPN names their company contacts)."""
    renamed = {c.graph_id for c in plan.changes if c.kind == "user" and c.action == "update"
               and (not c.operation.operations or any(op.get("path") == "userName" for op in c.operation.operations))}
    return {user for user in planned
            if before.get(user) != after.get(user) or user in renamed or user in shared}


async def select_contacts(tenant: TenantConfig, sync_store: SyncStore, snapshot: Snapshot, fingerprint: str, *,
                          full: bool) -> UserSelection:
    """Changed contacts (their mailboxes' included) plus those whose timers are due, each set from an index."""
    if full or await sync_store.value(tenant.name, CONTACT_INPUTS) != fingerprint:
        return UserSelection(True)
    return await due_selection(tenant, sync_store, snapshot, "contact", await sync_store.dirty_ids(tenant.name, "contact"))


async def select_groups(tenant: TenantConfig, sync_store: SyncStore, snapshot: Snapshot, plan: Plan, *,
                        full: bool) -> UserSelection:
    """Changed groups, groups of members created or deleted now, groups to create or delete, and those due."""
    if full:
        return UserSelection(True)
    name = tenant.name
    ids = await sync_store.dirty_ids(name, "group")
    configured = set(tenant.groups) if tenant.groups_starting_extension_number is not None else set()
    ids |= configured ^ set(await sync_store.pbx_ids(name, "group"))
    moved = {c.graph_id for c in plan.changes if c.kind == "user" and c.action in ("create", "delete")}
    ids |= {group for group, members in snapshot.group_members.items() if members & moved}
    if tenant.groups_transitive:  # members through nested groups are listed every run, not told by a delta
        ids |= configured
    return await due_selection(tenant, sync_store, snapshot, "group", ids, backoff=False)  # no backoff for groups
