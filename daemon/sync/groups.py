"""Entra groups listed in ``groups``: their membership (the INCLUDE scope) and,
with ``groups_starting_extension_number``, dialable SCIM Groups on the PBX.

Read: one groups delta per 50 configured ids (``$filter=id eq ... or ...``)
with ``members@delta``, merged into stored copies and membership. Plan and
apply after the users, so members are the SCIM ids of synced users; a
membership change is a PATCH that adds or removes members only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.config import TenantConfig
from daemon.errors import DeltaExpired
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.graph.delta import DeltaRound, is_removed
from daemon.logging import get_logger
from daemon.pbx.client import PbxClient, PbxOperation, PbxWriter
from daemon.pbx.filters import scim_string
from daemon.pbx.mapping import group_payload, patch_operations, payload_hash
from daemon.pbx.schema import PBX_GROUP
from daemon.sync.numbering import NumberAllocator, RangeExhausted
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

FILTER_LIMIT = 50  # Graph accepts at most 50 ids in one delta $filter


@dataclass
class GroupReport:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # configured ids Graph does not know

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


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


@dataclass
class GroupSync:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    pbx: PbxClient
    writer: PbxWriter
    now: Callable[[], float]
    pending_links: dict[str, str] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return bool(self.tenant.groups)

    async def read(self, report: GroupReport) -> None:
        """Merge the configured groups' delta; the new links wait for ``commit``."""
        groups = sorted(self.tenant.groups)
        mode = "transitive" if self.tenant.groups_transitive else "direct"
        if await self.sync_store.value(self.tenant.name, "groups-mode") != mode:
            # Membership was computed the other way: read every group afresh.
            for start in range(0, len(groups), FILTER_LIMIT):
                await self.store.drop_delta_link(self.tenant.name, "groups", ",".join(groups[start : start + FILTER_LIMIT]))
            await self.sync_store.clear_group_members(self.tenant.name, groups)
            await self.sync_store.set_value(self.tenant.name, "groups-mode", mode)
        for start in range(0, len(groups), FILTER_LIMIT):
            chunk = groups[start : start + FILTER_LIMIT]
            key = ",".join(chunk)
            clause = " or ".join(f"id eq '{g}'" for g in chunk)
            initial = f"/groups/delta?$filter={clause}&$select=displayName,mail,members"
            link = await self.store.delta_link(self.tenant.name, "groups", key)
            try:
                new_link = await self._round(link or initial)
            except DeltaExpired:
                log.warning("groups delta state expired; reading the groups again", tenant=self.tenant.name)
                await self.store.drop_delta_link(self.tenant.name, "groups", key)
                await self.sync_store.clear_group_members(self.tenant.name, chunk)
                new_link = await self._round(initial)
            if new_link:
                self.pending_links[key] = new_link
        if self.tenant.groups_transitive:
            await self._read_transitive(groups)
        for group_id in groups:
            if await self.sync_store.graph_copy(self.tenant.name, "group", group_id) is None:
                report.missing.append(group_id)
                log.warning("a configured group does not exist in Entra ID", tenant=self.tenant.name, group=group_id)

    async def _read_transitive(self, groups: list[str]) -> None:
        """groups_transitive: members through nested groups, listed each run
        (Graph has no delta for transitive membership); nested groups are not members."""
        requests = (BatchRequest(g, f"/groups/{g}/transitiveMembers?$select=id", mailbox=None) for g in groups)
        async for result in BatchExecutor(self.graph).run(requests):
            if not result.ok or not isinstance(result.body, dict):
                continue  # a group that does not exist is reported by read()
            members: set[str] = set()
            body: dict[str, Any] | None = result.body
            while body is not None:
                members |= {m["id"] for m in body.get("value", [])
                            if isinstance(m, dict) and m.get("@odata.type") == "#microsoft.graph.user"}
                next_link = body.get("@odata.nextLink")
                body = (await self.graph.get(next_link)).body if isinstance(next_link, str) else None
            group_id = result.request.key
            current = await self.sync_store.members_of(self.tenant.name, [group_id])
            await self.sync_store.set_group_members(self.tenant.name, group_id, members - current, current - members)

    async def _round(self, url: str) -> str | None:
        round_ = DeltaRound(self.graph, url)
        async for change in round_:
            added: list[str] = []
            removed: list[str] = []
            for member in change.get("members@delta", []) or []:
                if isinstance(member, dict) and isinstance(member.get("id"), str):
                    if member.get("@odata.type", "#microsoft.graph.user") != "#microsoft.graph.user":
                        continue  # a nested group: its members count only with groups_transitive
                    (removed if is_removed(member) else added).append(member["id"])
            properties = {k: v for k, v in change.items() if k != "members@delta"}
            await self.sync_store.merge_changes(self.tenant.name, "group", [properties])
            if not self.tenant.groups_transitive:
                await self.sync_store.set_group_members(self.tenant.name, change["id"], added, removed)
        return round_.delta_link

    async def commit(self) -> None:
        for key, link in self.pending_links.items():
            await self.store.save_delta_link(self.tenant.name, "groups", link, key)
        self.pending_links.clear()

    async def apply(self, report: GroupReport, pbx_numbers: set[str], group_inventory: dict[str, str]) -> None:
        """Create, update (members only when only they changed) and delete the PBX groups.

        Without ``groups_starting_extension_number`` the groups only define the
        INCLUDE scope, and PBX groups created earlier are deleted."""
        name = self.tenant.name
        start = self.tenant.groups_starting_extension_number
        synced_groups = await self.sync_store.synced_ids(name, "group")
        if start is None and not synced_groups:
            return
        user_ids = await self.sync_store.pbx_ids(name, "user")
        allocations = await self.sync_store.allocations(name)
        unavailable = set(pbx_numbers) | {n for n, _, _, released in allocations if released is None}
        allocator = NumberAllocator(start or "100", None, unavailable)
        configured = set(self.tenant.groups) if start is not None else set()
        for group_id in sorted(configured | set(synced_groups)):
            copy = await self.sync_store.graph_copy(name, "group", group_id)
            synced = await self.sync_store.synced(name, "group", group_id)
            pbx_id = synced.pbx_id if synced is not None and synced.pbx_id else group_inventory.get(group_id)
            if copy is None or copy.removed or group_id not in configured:
                if pbx_id is not None:
                    await self._write(report, "delete", PbxOperation("delete", "Group", group_id, pbx_id=pbx_id), None, None)
                continue
            members = [user_ids[m] for m in sorted(await self.sync_store.members_of(name, [group_id])) if m in user_ids]
            number = (synced.payload or {}).get(PBX_GROUP, {}).get("extensionNumber") if synced is not None else None
            number = number or self._owned(allocations, group_id)
            if number is None:
                try:
                    number = allocator.take()
                except RangeExhausted as err:
                    report.failures.append(f"group {copy.data.get('displayName')}: {err}")
                    continue
                await self.sync_store.allocate(name, number, "group", group_id)
            desired = group_payload(copy.data, extension_number=number, member_ids=members)
            if pbx_id is None:
                await self._write(report, "create", PbxOperation("create", "Group", group_id, payload=desired), desired, number)
                continue
            previous = synced.payload if synced is not None and synced.payload else None
            if previous is None:  # on the PBX but not recorded: converge by replacing what we manage
                operations = patch_operations({}, desired)
            else:
                before = [m["value"] for m in previous.get("members", [])]
                after = [m["value"] for m in desired.get("members", [])]
                operations = patch_operations({k: v for k, v in previous.items() if k != "members"},
                                              {k: v for k, v in desired.items() if k != "members"})
                operations += member_operations(before, after)
            if operations:
                operation = PbxOperation("update", "Group", group_id, payload=desired, operations=operations,
                                         pbx_id=pbx_id, etag=synced.etag if synced is not None else None)
                await self._write(report, "update", operation, desired, number)

    @staticmethod
    def _owned(allocations: list[tuple[str, str, str, float | None]], group_id: str) -> str | None:
        return next((n for n, kind, owner, released in allocations if kind == "group" and owner == group_id and released is None), None)

    async def _write(self, report: GroupReport, kind: str, operation: PbxOperation,
                     payload: dict[str, Any] | None, number: str | None) -> None:
        name = self.tenant.name
        outcome = await self.writer.execute(operation)
        if not outcome.ok:
            report.failures.append(f"group {operation.external_id}: {outcome.error}")
            report.add("failed")
            return
        report.add(kind)
        if kind == "delete":
            await self.sync_store.release(name, "group", operation.external_id)
            await self.sync_store.forget_synced(name, "group", operation.external_id)
            return
        await self.sync_store.record_push(
            name, "group", operation.external_id, pbx_id=outcome.pbx_id or operation.pbx_id, payload=payload,
            payload_hash=payload_hash(payload) if payload else None, etag=outcome.etag, active=None,
            out_of_scope_since=None, photo_etag=None,
        )
