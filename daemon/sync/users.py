"""The users part of a run (``TenantSync`` orders the parts): read the delta,
plan, apply, and commit the deltaLink once the whole run was applied.

Crash safety comes from the order of durable steps:

1. Graph changes are merged into the stored copies page by page (merging
   the same change twice is harmless).
2. A new user's extension number is recorded before the user is created.
3. Each PBX write is recorded as soon as its answer arrives.
4. The deltaLink is committed only after every write of the run was tried.

A crash anywhere repeats at most the unfinished part: the next run replays
the delta from the last committed link, finds objects created but not
recorded through the PBX inventory (by externalId), and reuses the recorded
number, so nothing is created twice and no change is lost.
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
from daemon.pbx.client import PbxClient, PbxOperation, PbxOutcome, PbxWriter
from daemon.pbx.mapping import managed_view, patch_operations, payload_hash, photo_data_uri
from daemon.pbx.schema import EXTENSION_NUMBER_PATHS, PBX_GROUP, PBX_USER
from daemon.retry import header
from daemon.sync.contacts import ContactReport
from daemon.sync.groups import GroupReport
from daemon.sync.plan import PHOTO_PLACEHOLDER, InventoryEntry, PlanInputs, UserAction, UserPlan, UserPlanner
from daemon.sync.scope import decide
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

USER_SELECT = (
    "displayName,givenName,surname,userPrincipalName,mail,jobTitle,department,"
    "businessPhones,mobilePhone,accountEnabled,userType,createdDateTime"
)
MERGE_PAGE = 200
WRITE_CHUNK = 50
MAX_PHOTO_BYTES = 256 * 1024

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Inventory:
    """What the PBX holds, read once per run: every extension number (users and
    groups), and our users and groups by externalId."""

    numbers: set[str]
    users: dict[str, InventoryEntry]
    groups: dict[str, str]


async def pbx_inventory(pbx: PbxClient) -> Inventory:
    numbers: set[str] = set()
    users: dict[str, InventoryEntry] = {}
    groups: dict[str, str] = {}
    for kind, urn in (("User", PBX_USER), ("Group", PBX_GROUP)):
        async for obj in pbx.iter_objects(kind, [EXTENSION_NUMBER_PATHS[kind]]):  # type: ignore[arg-type]
            extension = obj.data.get(urn, {}).get("extensionNumber") if isinstance(obj.data.get(urn), dict) else None
            if extension:
                numbers.add(str(extension))
            if kind == "User" and obj.external_id:
                users[obj.external_id] = InventoryEntry(obj.id, str(extension) if extension else None)
            elif obj.external_id:
                groups[obj.external_id] = obj.id
    return Inventory(numbers, users, groups)


@dataclass
class UserRunReport:
    result: str = "success"  # success | partial | deprovisions_held | failed
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    unmatched_selected: list[str] = field(default_factory=list)
    full_round: bool = False
    reconciled: int = 0
    error: str | None = None
    groups: GroupReport = field(default_factory=GroupReport)
    contacts: ContactReport = field(default_factory=ContactReport)

    def add(self, kind: str, amount: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + amount


@dataclass
class UserSync:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    pbx: PbxClient  # reads (inventory, recovery); writes go through ``writer``
    writer: PbxWriter
    now: Callable[[], float]
    progress: Progress | None = None

    async def plan_and_apply(self, report: UserRunReport, inventory: Inventory, shared: dict[str, str]) -> UserPlan:
        """Plan every user from the stored copies and apply the plan (held deprovisions aside)."""
        name = self.tenant.name
        photos = await self._photos(set(shared)) if self.tenant.users.sync_photo and self.tenant.users.enabled else {}
        held = await self.sync_store.held(name)
        inputs = PlanInputs(
            tenant=self.tenant,
            now=self.now(),
            group_members=frozenset(await self.sync_store.members_of(name, self.tenant.groups)),
            pbx_numbers=frozenset(inventory.numbers),
            pbx_by_external_id=inventory.users,
            allocations=tuple(await self.sync_store.allocations(name)),
            photos=photos,
            approved_deprovisions=frozenset(i for i, (_, approved) in held.items() if approved),
            synced_count=await self.sync_store.count_synced(name, "user"),
            shared_mailboxes=frozenset(shared),
        )
        planner = UserPlanner(inputs)
        async for copy, synced in self.sync_store.iter_with_synced(name, "user"):
            planner.add(copy, synced)
        plan = planner.finish()
        report.plan = [a.describe() for a in plan.ordered_writes()]
        report.unmatched_selected = plan.unmatched_selected
        for reference in plan.unmatched_selected:
            log.warning("a selected_users entry matches no user", tenant=name, entry=reference)
        await self.sync_store.hold(name, {a.graph_id: a.kind for a in plan.held})
        report.held = [a.describe() for a in plan.held]
        await self._apply(plan, report)
        return plan

    async def commit(self, delta_link: str | None) -> None:
        if delta_link is not None:
            await self.store.save_delta_link(self.tenant.name, "users", delta_link)

    # --- read ---

    async def read(self, report: UserRunReport) -> str | None:
        """Merge the users delta into the stored copies; returns the new deltaLink."""
        name = self.tenant.name
        link = await self.store.delta_link(name, "users")
        try:
            return await self._round(link, report)
        except DeltaExpired:
            log.warning("users delta state expired; running a full round and reconciling", tenant=name)
            await self.store.drop_delta_link(name, "users")
            return await self._round(None, report)

    async def _round(self, link: str | None, report: UserRunReport) -> str | None:
        report.full_round = link is None
        seen: set[str] = set()
        page: list[dict[str, Any]] = []
        round_ = DeltaRound(self.graph, link or f"/users/delta?$select={USER_SELECT}")
        async for change in round_:
            if is_removed(change) is None:
                seen.add(change["id"])
            page.append(change)
            if len(page) >= MERGE_PAGE:
                await self.sync_store.merge_changes(self.tenant.name, "user", page)
                page = []
                if self.progress is not None:
                    self.progress("read", len(seen), 0)
        await self.sync_store.merge_changes(self.tenant.name, "user", page)
        if link is None:
            missing = await self.sync_store.mark_missing_removed(self.tenant.name, "user", seen)
            report.reconciled = len(missing)
            if missing:
                log.info("full round no longer returns some users; they are deprovisioned", tenant=self.tenant.name,
                         users=len(missing))
        return round_.delta_link

    async def _photos(self, shared: set[str]) -> dict[str, str | None]:
        """mediaEtag of every active user's photo (None: no photo), in $batches."""
        candidates: list[str] = []
        members = await self.sync_store.members_of(self.tenant.name, self.tenant.groups)
        async for copy, _ in self.sync_store.iter_with_synced(self.tenant.name, "user"):
            if copy is not None and decide(copy.data, copy.removed, self.tenant, members, shared).active:
                candidates.append(copy.id)
        requests = (BatchRequest(user_id, f"/users/{user_id}/photo", mailbox=user_id) for user_id in candidates)
        photos: dict[str, str | None] = {}
        async for result in BatchExecutor(self.graph).run(requests):
            user_id = result.request.key
            if result.ok and isinstance(result.body, dict):
                photos[user_id] = str(result.body.get("@odata.mediaEtag") or "") or None
            elif result.status == 404:
                photos[user_id] = None
            # other failures: unknown this run, the planner keeps the previous state
        return photos

    async def _photo_uris(self, actions: list[UserAction]) -> dict[str, str | None]:
        """data: URIs of the photos whose mediaEtag changed (fetched only for those)."""
        size = self.tenant.users.photo_size
        wanted = [a.graph_id for a in actions if a.photo_etag and _sends_photo(a)]
        requests = (BatchRequest(i, f"/users/{i}/photos/{size}/$value", mailbox=i) for i in wanted)
        uris: dict[str, str | None] = {}
        async for result in BatchExecutor(self.graph).run(requests):
            body = result.body
            if result.ok and isinstance(body, bytes) and 0 < len(body) <= MAX_PHOTO_BYTES:
                content_type = header(result.headers, "content-type") or "image/jpeg"
                uris[result.request.key] = photo_data_uri(body, content_type.split(";")[0] or "image/jpeg")
            else:
                uris[result.request.key] = None
        return uris

    # --- apply ---

    async def _apply(self, plan: UserPlan, report: UserRunReport) -> None:
        name = self.tenant.name
        for action in plan.actions:
            if action.kind == "fail":
                report.add("failed")
                report.failures.append(f"{action.upn}: {action.reason}")
                log.error("user cannot be synced", tenant=name, user=action.upn, reason=action.reason)
            elif action.kind == "quarantined":
                report.add("quarantined")
            elif action.kind == "track":
                await self.sync_store.set_out_of_scope_since(name, "user", action.graph_id, action.out_of_scope_since)
        writes = plan.ordered_writes()
        for action in writes:
            if action.kind == "create" and action.extension:
                await self.sync_store.allocate(name, action.extension, "user", action.graph_id)
        photo_uris = await self._photo_uris(writes) if self.tenant.users.sync_photo else {}
        done = 0
        for start in range(0, len(writes), WRITE_CHUNK):
            chunk = writes[start : start + WRITE_CHUNK]
            operations = [await self._operation(action, photo_uris) for action in chunk]
            by_operation = {id(op): action for op, action in zip(operations, chunk, strict=True)}
            async for outcome in self.writer.execute_many(operations):
                await self._record(by_operation[id(outcome.operation)], outcome, report)
                done += 1
                if self.progress is not None:
                    self.progress("apply", done, len(writes))

    async def _operation(self, action: UserAction, photo_uris: dict[str, str | None]) -> PbxOperation:
        payload = _with_photo(action.payload, photo_uris.get(action.graph_id)) if action.payload else None
        if action.kind == "create":
            return PbxOperation("create", "User", action.graph_id, payload=payload)
        if action.kind == "delete":
            return PbxOperation("delete", "User", action.graph_id, pbx_id=action.pbx_id)
        operations = [_resolve_photo(op, photo_uris.get(action.graph_id)) for op in action.operations]
        etag = action.etag
        if action.recovered and action.pbx_id is not None and payload is not None:
            current = await self.pbx.get("User", action.pbx_id)
            if current is not None:
                operations = patch_operations(managed_view(current.data, payload), payload)
                etag = current.etag
        return PbxOperation("update", "User", action.graph_id, payload=payload, operations=operations,
                            pbx_id=action.pbx_id, etag=etag)

    async def _record(self, action: UserAction, outcome: PbxOutcome, report: UserRunReport) -> None:
        name = self.tenant.name
        if not outcome.ok:
            error = str(outcome.error)
            quarantined = await self.sync_store.record_failure(name, "user", action.graph_id, error, action.fingerprint)
            report.add("failed")
            report.failures.append(f"{action.upn}: {error}")
            if quarantined:
                log.error("user quarantined after repeated failures", tenant=name, user=action.upn, error=error)
            return
        report.add(action.kind)
        if action.kind == "delete":
            await self.sync_store.release(name, "user", action.graph_id)
            await self.sync_store.forget_synced(name, "user", action.graph_id)
            copy = await self.sync_store.graph_copy(name, "user", action.graph_id)
            if copy is not None and copy.removed == "deleted":
                await self.sync_store.purge_graph_object(name, "user", action.graph_id)
            return
        if action.extension:
            await self.sync_store.allocate(name, action.extension, "user", action.graph_id)
        await self.sync_store.record_push(
            name, "user", action.graph_id,
            pbx_id=outcome.pbx_id or action.pbx_id,
            payload=action.payload,
            payload_hash=payload_hash(action.payload) if action.payload else None,
            etag=outcome.etag,
            active=action.active,
            out_of_scope_since=action.out_of_scope_since,
            photo_etag=action.photo_etag,
        )


def _sends_photo(action: UserAction) -> bool:
    if action.kind == "create" or action.recovered:
        return True
    return any(str(op.get("path")) == "photos" and op.get("op") != "remove" for op in action.operations)


def _with_photo(payload: dict[str, Any], uri: str | None) -> dict[str, Any]:
    """The payload as sent: the photo placeholder becomes the data: URI (or goes)."""
    photos = payload.get("photos")
    if not photos or not str(photos[0].get("value", "")).startswith(PHOTO_PLACEHOLDER):
        return payload
    sent = dict(payload)
    if uri:
        sent["photos"] = [{"value": uri, "type": "photo"}]
    else:
        sent.pop("photos")
    return sent


def _resolve_photo(operation: dict[str, Any], uri: str | None) -> dict[str, Any]:
    if operation.get("path") != "photos" or "value" not in operation:
        return operation
    if uri is None:
        return {"op": "remove", "path": "photos"}
    return {**operation, "value": [{"value": uri, "type": "photo"}]}
