"""The one applier: every kind's changes go to the PBX here, and nowhere else.

Phases run in order (creates and updates, memberships, disables, group
deletes, user deletes), each in chunks of ``WRITE_CHUNK`` changes:

1. the chunk is materialized: users created earlier in the run get their PBX
   ids filled into groups and contacts, photos are fetched for this chunk
   only (and dropped after it);
2. its creates (and the numbers they take) are journaled in one transaction,
   so after a crash they are looked up by externalId instead of sent again;
3. the writer sends it (``/Bulk`` where the PBX supports it, never an empty
   PATCH; lost answers are resolved by the PBX client);
4. its bookkeeping is recorded in one transaction.

A failed object is recorded (and quarantined after repeated failures) and
the run goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from daemon.logging import get_logger
from daemon.pbx.mapping import payload_hash
from daemon.pbx.types import PbxOutcome, PbxWriter
from daemon.sync.changes import PENDING_MEMBER, Change, Phase, Plan
from state.pushed import Bookkeeping, Failed, Pushed
from state.sync_store import SyncStore

log = get_logger(__name__)

WRITE_CHUNK = 50

Progress = Callable[[str, int, int], None]
Materialize = Callable[[list[Change]], Awaitable[list[Change]]]


class ReportSink(Protocol):
    def count(self, kind: str, action: str) -> None: ...

    def fail(self, kind: str, text: str) -> None: ...


@dataclass
class Applier:
    tenant: str
    sync_store: SyncStore
    writer: PbxWriter
    report: ReportSink
    progress: Progress | None = None
    materializers: tuple[Materialize, ...] = ()
    chunk_size: int = WRITE_CHUNK

    async def apply(self, plan: Plan) -> None:
        for kind, text in plan.failures:
            self.report.fail(kind, text)
            log.error("object cannot be synced", kind=kind, problem=text)
        for kind, _ in plan.quarantined:
            self.report.count(kind, "quarantined")
        await self.sync_store.apply_bookkeeping(self.tenant, plan.bookkeeping)
        ordered = plan.ordered()
        resolver = MemberResolver(self.sync_store, self.tenant)
        done = 0
        for phase in Phase:
            changes = [c for c in ordered if c.phase == phase]
            for start in range(0, len(changes), self.chunk_size):
                chunk = changes[start : start + self.chunk_size]
                done += len(chunk)
                if phase >= Phase.MEMBERSHIP:
                    chunk = await resolver.resolve(chunk)
                for materialize in self.materializers:
                    chunk = await materialize(chunk)
                await self._apply_chunk(chunk)
                if self.progress is not None:
                    self.progress("apply", done, len(ordered))

    async def _apply_chunk(self, chunk: list[Change]) -> None:
        await self.sync_store.journal_creates(
            self.tenant, [(c.kind, c.graph_id, c.extension) for c in chunk if c.operation.action == "create"])
        by_operation = {id(c.operation): c for c in chunk}
        entries: list[Bookkeeping] = []
        failed: dict[str, Change] = {}
        async for outcome in self.writer.execute_many([c.operation for c in chunk]):
            change = by_operation[id(outcome.operation)]
            entry = self._bookkeeping(change, outcome)
            if entry is not None:
                entries.append(entry)
            if outcome.ok:
                self.report.count(change.kind, change.action)
            else:
                self.report.fail(change.kind, f"{change.label}: {outcome.error}")
                failed[change.graph_id] = change
        for graph_id in await self.sync_store.apply_bookkeeping(self.tenant, entries):
            change = failed[graph_id]
            log.error("object quarantined after repeated failures", kind=change.kind, object=change.label)

    @staticmethod
    def _bookkeeping(change: Change, outcome: PbxOutcome) -> Bookkeeping | None:
        if not outcome.ok:
            if change.kind == "busy":
                return None  # the next poll tries again; nothing to quarantine
            return Failed(change.kind, change.graph_id, str(outcome.error), change.fingerprint)
        entry = change.on_success
        if isinstance(entry, Pushed):
            return replace(entry, pbx_id=outcome.pbx_id or change.operation.pbx_id or entry.pbx_id, etag=outcome.etag)
        return entry


class MemberResolver:
    """Fills in the PBX ids of users created earlier in the run (group members,
    contact owners). A member whose user was not created is left out (the next
    run adds it); a contact whose owner was not created waits for the next run."""

    def __init__(self, sync_store: SyncStore, tenant: str) -> None:
        self.sync_store = sync_store
        self.tenant = tenant
        self._ids: dict[str, str] | None = None

    async def resolve(self, chunk: list[Change]) -> list[Change]:
        out = []
        for change in chunk:
            if PENDING_MEMBER not in repr(change.operation.payload) + repr(change.operation.operations):
                out.append(change)
                continue
            if self._ids is None:  # once per run: every user create is done by now
                self._ids = await self.sync_store.pbx_ids(self.tenant, "user")
            missing: list[str] = []
            operation = change.operation
            payload = _resolve(operation.payload, self._ids, missing) if operation.payload is not None else None
            operations = [op for op in _resolve(list(operation.operations), self._ids, missing)
                          if not (op.get("op") == "add" and op.get("value") == [])]
            if missing:
                log.info("left for the next run: its user was not created", kind=change.kind, object=change.label)
                continue
            on_success = change.on_success
            if isinstance(on_success, Pushed) and payload is not None:
                on_success = replace(on_success, payload=payload, payload_hash=payload_hash(payload))
            out.append(replace(change, operation=replace(operation, payload=payload, operations=operations),
                               on_success=on_success))
        return out


def _resolve(value: Any, ids: Mapping[str, str], missing: list[str]) -> Any:
    """``value`` with pending member references replaced; members that cannot be
    resolved are dropped from member lists, any other reference is ``missing``."""
    if isinstance(value, str) and value.startswith(PENDING_MEMBER):
        resolved = ids.get(value.removeprefix(PENDING_MEMBER))
        if resolved is None:
            missing.append(value)
        return resolved
    if isinstance(value, list):
        kept = []
        for item in value:
            if isinstance(item, dict) and set(item) == {"value"} and isinstance(item["value"], str) \
                    and item["value"].startswith(PENDING_MEMBER) and item["value"].removeprefix(PENDING_MEMBER) not in ids:
                continue  # a member whose user is not on the PBX
            kept.append(_resolve(item, ids, missing))
        return kept
    if isinstance(value, dict):
        return {k: _resolve(v, ids, missing) for k, v in value.items()}
    return value
