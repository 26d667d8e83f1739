"""Each object's history: every applied write (kind, Graph id, action, the names
of the attributes it changed, the run and the time), so an admin can ask what
happened to someone, when and why. Values are kept only for the attributes
people recognise an object by (``KEPT_VALUES``); the rest is names only.

Entries are written in the applier's per-chunk bookkeeping transaction (one
batched insert per chunk) and deleted after ``[state] history_days`` by an
indexed delete (``object_history_at``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from state.db import Database
from state.store import Clock

DEFAULT_HISTORY_DAYS = 30
KEPT_VALUES = ("displayName", "userName", "extensionNumber")
DAY_SECONDS = 86400


@dataclass(frozen=True)
class HistoryEntry:
    kind: str
    graph_id: str
    action: str
    attributes: tuple[str, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    run_id: str | None = None
    at: float | None = None  # set when recorded


async def record_history(conn: Any, tenant: str, entries: Sequence[HistoryEntry], now: float) -> None:
    """One batched insert, inside the caller's transaction."""
    if entries:
        names: dict[tuple[str, ...], str] = {}  # a first run's creates all name the same attributes: one text each
        await conn.executemany(
            "INSERT INTO object_history (tenant, kind, graph_id, at, run_id, action, attributes, changed_values, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(tenant, e.kind, e.graph_id, now, e.run_id, e.action, _names_text(e.attributes, names),
              json.dumps(dict(e.values), sort_keys=True), e.reason) for e in entries],
        )


def _names_text(attributes: tuple[str, ...], known: dict[tuple[str, ...], str]) -> str:
    text = known.get(attributes)
    if text is None:
        text = known[attributes] = json.dumps(list(attributes))
    return text


class HistoryQueries:
    db: Database
    clock: Clock
    history_days: int

    async def history(self, tenant: str, kind: str, graph_id: str, limit: int = 100) -> list[HistoryEntry]:
        """The object's last ``limit`` entries, oldest first."""
        rows = await self.db.fetchall(
            "SELECT kind, graph_id, action, attributes, changed_values, reason, run_id, at FROM object_history"
            " WHERE tenant = ? AND kind = ? AND graph_id = ? ORDER BY at DESC LIMIT ?",
            (tenant, kind, graph_id, limit),
        )
        return [HistoryEntry(r[0], r[1], r[2], tuple(json.loads(r[3])), json.loads(r[4]), r[5], r[6], float(r[7]))
                for r in reversed(rows)]

    async def prune_history(self) -> int:
        """Delete entries older than ``history_days`` (every tenant: one indexed delete)."""
        cutoff = self.clock() - self.history_days * DAY_SECONDS
        async with self.db.transaction() as conn:
            return int(await conn.execute(PRUNE_HISTORY, (cutoff,)) or 0)


PRUNE_HISTORY = "DELETE FROM object_history WHERE at < ?"


async def find_in_history(db: Database, tenant: str, reference: str) -> tuple[str, str] | None:
    """(kind, graph id) of the object last written under this id, userName or displayName: a
    deleted object's copy is gone, its history is not. An admin's lookup, not a run's."""
    row = await db.fetchone(
        "SELECT kind, graph_id FROM object_history WHERE tenant = ? AND (graph_id = ? OR lower(changed_values) LIKE ?)"
        " ORDER BY at DESC LIMIT 1",
        (tenant, reference, f'%": {json.dumps(reference.lower())}%'),
    )
    return None if row is None else (str(row[0]), str(row[1]))
