"""The group planner: configured Entra groups -> dialable PBX groups. Pure.

With ``groups_starting_extension_number`` every configured group becomes a
SCIM Group whose members are the group's members that are PBX users (those
created earlier in the same run as typed ``UserRef``s the applier resolves); a membership
change is a PATCH that adds and removes members only. Without it the groups
only define the INCLUDE scope, and PBX groups created earlier are deleted.
Numbers come from the pool the users use, under the same reuse rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from daemon.errors import RangeExhausted
from daemon.pbx.filters import scim_string
from daemon.pbx.mapping import group_payload, patch_operations, payload_hash
from daemon.pbx.schema import PBX_GROUP
from daemon.pbx.types import PbxOperation
from daemon.sync.changes import Change, Phase, Plan, Refs, UserRef
from daemon.sync.numbering import NumberPool
from daemon.sync.snapshot import Snapshot
from state.pushed import Pushed, Removed
from state.sync_store import GraphCopy, SyncedRow


def member_operations(before: list[str], after: list[str]) -> list[dict[str, Any]]:
    """PATCH operations that add and remove members, and nothing else."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    operations: list[dict[str, Any]] = []
    if added:
        operations.append({"op": "add", "path": "members", "value": [{"value": m} for m in added]})
    for member in removed:
        operations.append({"op": "remove", "path": f"members[value eq {scim_string(member)}]"})
    return operations


def plan_groups(snapshot: Snapshot, copies: Mapping[str, GraphCopy], synced: Mapping[str, SyncedRow],
                user_pbx_ids: Mapping[str, str], created_users: Set[str], leaving_users: Set[str],
                pool: NumberPool, only: Set[str] | None = None) -> Plan:
    """Every group write of the run; ``user_pbx_ids`` are the users on the PBX,
    ``created_users`` those created in this run, ``leaving_users`` those deleted in it;
    ``only``: the groups this run plans (``changed_kinds``), None for every one."""
    tenant = snapshot.tenant
    plan = Plan()
    start = tenant.groups_starting_extension_number
    if start is None and not synced:
        return plan
    allocator = pool.allocator(start or "100", None)
    configured = set(tenant.groups) if start is not None else set()
    groups = configured | set(synced)
    for group_id in sorted(groups if only is None else groups & only):
        try:
            copy, row = copies.get(group_id), synced.get(group_id)
            pbx_id = row.pbx_id if row is not None and row.pbx_id else snapshot.inventory.groups.get(group_id)
            label = str(copy.data.get("displayName") or group_id) if copy is not None else group_id
            if copy is None or copy.removed or group_id not in configured:
                if pbx_id is not None:
                    reason = "removed from the groups setting" if group_id not in configured else "deleted in Entra ID"
                    plan.changes.append(Change("group", "delete", Phase.GROUP_DELETE,
                                               PbxOperation("delete", "Group", group_id, pbx_id=pbx_id),
                                               Removed("group", group_id, copy is not None and copy.removed == "deleted"),
                                               label, reason))
                continue
            members: list[str] = []
            created: list[UserRef] = []
            for member in sorted(snapshot.group_members.get(group_id, frozenset())):
                if member in leaving_users:
                    continue
                if member in user_pbx_ids:
                    members.append(user_pbx_ids[member])
                elif member in created_users:
                    created.append(UserRef(member))
            refs = Refs(members=tuple(created))
            if not members and not created:
                plan.notes.append(f"group {label!r} ({group_id}) has no member that is a PBX user")
            number = (row.payload or {}).get(PBX_GROUP, {}).get("extensionNumber") if row is not None else None
            # a group to create takes its journaled number only if the PBX's numbers do not show it taken
            number = number or (pool.live_number("group", group_id) if pbx_id is not None else None)
            if number is None:
                try:
                    number = pool.own_number("group", group_id) or allocator.take()
                except RangeExhausted as err:
                    plan.failures.append(("group", f"{label}: {err}"))
                    continue
            desired = group_payload(copy.data, extension_number=number, member_ids=members)
            pushed = Pushed("group", group_id, pbx_id, desired, payload_hash(desired), row.etag if row else None,
                            extension=number)
            if pbx_id is None:
                operation = PbxOperation("create", "Group", group_id, payload=desired,
                                         maybe_applied=group_id in snapshot.pending_creates.get("group", frozenset()))
                plan.changes.append(Change("group", "create", Phase.MEMBERSHIP, operation, pushed, label,
                                           "listed in the groups setting", extension=number, refs=refs))
                continue
            previous = row.payload if row is not None and row.payload else None
            if previous is None:  # on the PBX but not recorded: re-read and converge
                operation = PbxOperation("update", "Group", group_id, payload=desired, pbx_id=pbx_id, maybe_applied=True)
                plan.changes.append(Change("group", "update", Phase.MEMBERSHIP, operation, pushed, label,
                                           "on the PBX but not recorded (recovering after an interruption)", refs=refs))
                continue
            before = [m["value"] for m in previous.get("members", [])]
            after = [m["value"] for m in desired.get("members", [])]
            operations = patch_operations({k: v for k, v in previous.items() if k != "members"},
                                          {k: v for k, v in desired.items() if k != "members"})
            operations += member_operations(before, after)
            if operations or created:
                operation = PbxOperation("update", "Group", group_id, payload=desired, operations=operations,
                                         pbx_id=pbx_id, etag=row.etag if row is not None else None)
                plan.changes.append(Change("group", "update", Phase.MEMBERSHIP, operation, pushed, label,
                                           "changed in Entra ID", refs=refs))
        except Exception as error:  # one group's failure, never the run's
            copy = copies.get(group_id)
            plan.fail("group", group_id, str(copy.data.get("displayName") or group_id) if copy else group_id, error)
    return plan
