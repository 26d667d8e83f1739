"""What happened to one user or group, when and why: its history of applied
writes (``state.history``) as ``m365sync history``, ``explain`` and
``GET /api/tenants/{name}/history/{object}`` show it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from state.history import HistoryEntry, find_in_history
from state.sync_store import SyncStore

EXPLAIN_ENTRIES = 5


@dataclass(frozen=True)
class ObjectHistory:
    kind: str
    graph_id: str
    label: str
    entries: list[HistoryEntry]

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.graph_id, "name": self.label,
                "entries": [{**asdict(e), "attributes": list(e.attributes), "values": dict(e.values)}
                            for e in self.entries]}


async def object_history(sync_store: SyncStore, tenant: str, reference: str, limit: int = 100) -> ObjectHistory | None:
    """A user (UPN or id), a group (display name or id), or a deleted object by its last
    known userName, displayName or id; None if nothing of that name was ever written."""
    found = await _find(sync_store, tenant, reference)
    if found is None:
        return None
    kind, graph_id, label = found
    return ObjectHistory(kind, graph_id, label, await sync_store.history(tenant, kind, graph_id, limit))


async def _find(sync_store: SyncStore, tenant: str, reference: str) -> tuple[str, str, str] | None:
    user = await sync_store.find_user(tenant, reference)
    if user is not None:
        return "user", user.id, str(user.data.get("userPrincipalName") or user.id)
    group = await sync_store.graph_copy(tenant, "group", reference)
    if group is not None:
        return "group", group.id, str(group.data.get("displayName") or group.id)
    async for copy in sync_store.iter_copies(tenant, "group"):
        if str(copy.data.get("displayName", "")).lower() == reference.lower():
            return "group", copy.id, str(copy.data["displayName"])
    written = await find_in_history(sync_store.db, tenant, reference)
    return None if written is None else (written[0], written[1], reference)


def history_lines(entries: list[HistoryEntry]) -> list[str]:
    """``2026-12-01 02:30:05 UTC  update  [displayName, title]  displayName=Alice B  (reason)  run 1a2b``"""
    lines = []
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(e.at or 0))
        changed = f"  [{', '.join(e.attributes)}]" if e.attributes else ""
        values = "".join(f"  {name}={value}" for name, value in sorted(e.values.items()))
        why = f"  ({e.reason})" if e.reason else ""
        run = f"  run {e.run_id}" if e.run_id else ""
        lines.append(f"{when}  {e.action}{changed}{values}{why}{run}")
    return lines
