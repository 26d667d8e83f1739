"""The sync engine's state, one facade over focused query modules: Graph
copies (``state.copies``), pushed objects and bookkeeping (``state.pushed``),
typed markers and the run lease (``state.markers``), what is due
(``state.due``), folder listings (``state.listings``); and here extension
allocations, held deprovisions and group membership."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from state.copies import CopyQueries, GraphCopy
from state.db import Database
from state.due import DueQueries
from state.history import DEFAULT_HISTORY_DAYS, HistoryQueries
from state.listings import FolderListingQueries
from state.markers import MarkerQueries
from state.pushed import FAILURES_BEFORE_QUARANTINE, PushedQueries, SyncedRow
from state.store import Clock

__all__ = ["FAILURES_BEFORE_QUARANTINE", "GraphCopy", "SyncStore", "SyncedRow"]


class SyncStore(CopyQueries, PushedQueries, MarkerQueries, HistoryQueries, DueQueries, FolderListingQueries):
    def __init__(self, db: Database, clock: Clock = time.time, history_days: int = DEFAULT_HISTORY_DAYS) -> None:
        self.db = db
        self.clock = clock
        self.history_days = history_days

    # --- extension numbers ---

    async def allocations(self, tenant: str) -> list[tuple[str, str, str, float | None]]:
        """(number, owner kind, owner graph id, released_at) for every number ever handed out."""
        return [
            (r[0], r[1], r[2], r[3])
            for r in await self.db.fetchall(
                "SELECT number, owner_kind, owner_graph_id, released_at FROM extension_allocations WHERE tenant = ?",
                (tenant,),
            )
        ]

    # --- the mass-deletion guard ---

    async def hold(self, tenant: str, held: Mapping[str, tuple[str, str]]) -> None:
        """Replace the held set (graph id -> (kind, action)), keeping approvals of ids still held."""
        async with self.db.transaction() as conn:
            approved = {
                row[0]
                for row in await conn.fetchall(
                    "SELECT graph_id FROM held_deprovisions WHERE tenant = ? AND approved = 1", (tenant,)
                )
            }
            await conn.execute("DELETE FROM held_deprovisions WHERE tenant = ?", (tenant,))
            await conn.executemany(
                "INSERT INTO held_deprovisions (tenant, graph_id, kind, action, held_at, approved)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (tenant, id_, kind, action, self.clock(), int(id_ in approved))
                    for id_, (kind, action) in held.items()
                ],
            )

    async def held(self, tenant: str) -> dict[str, tuple[str, str, bool]]:
        """graph id -> (kind, action, approved)."""
        return {
            r[0]: (r[1], r[2], bool(r[3]))
            for r in await self.db.fetchall(
                "SELECT graph_id, kind, action, approved FROM held_deprovisions WHERE tenant = ?", (tenant,)
            )
        }

    async def approve_held(self, tenant: str) -> int:
        """Release exactly the currently held set on the next run."""
        async with self.db.transaction() as conn:
            return await conn.execute("UPDATE held_deprovisions SET approved = 1 WHERE tenant = ?", (tenant,))

    # --- group membership and bookkeeping ---

    async def set_group_members(self, tenant: str, group_id: str, added: Iterable[str], removed: Iterable[str]) -> None:
        async with self.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO group_members (tenant, group_id, member_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(tenant, group_id, m) for m in added],
            )
            await conn.executemany(
                "DELETE FROM group_members WHERE tenant = ? AND group_id = ? AND member_id = ?",
                [(tenant, group_id, m) for m in removed],
            )

    async def replace_group_members(self, tenant: str, members: Mapping[str, Iterable[str]]) -> None:
        """Each group's membership becomes exactly ``members[group]`` (a full read)."""
        async with self.db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM group_members WHERE tenant = ? AND group_id = ?", [(tenant, g) for g in members]
            )
            await conn.executemany(
                "INSERT INTO group_members (tenant, group_id, member_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(tenant, g, m) for g, ids in members.items() for m in ids],
            )

    async def members_of(self, tenant: str, group_ids: Iterable[str]) -> set[str]:
        ids = list(group_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        return {
            row[0]
            for row in await self.db.fetchall(
                f"SELECT DISTINCT member_id FROM group_members WHERE tenant = ? AND group_id IN ({marks})",
                (tenant, *ids),
            )
        }
