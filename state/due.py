"""The objects a run plans, each with its pushed state: every one (a full
plan), or only those it must plan, each found by an index
(``0012_plan_what_changed``), never by reading every stored copy: copies
merged since the last applied plan (``dirty``), failed objects (to retry
when due, or to count as waiting or quarantined), deprovisions whose grace
period is over, and photo checks that are due (see ``daemon.sync.changed``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from state.copies import GraphCopy, id_chunks
from state.db import Database
from state.pushed import SYNCED_COLUMNS, SyncedRow, synced_row
from state.store import Clock, write_delta_links

# A Graph copy joined with its pushed state (add the WHERE clause).
COPY_WITH_SYNCED = (
    f"SELECT g.id, g.data, g.removed, {', '.join('s.' + c.strip() for c in SYNCED_COLUMNS.split(','))}"
    " FROM graph_objects g LEFT JOIN synced_objects s ON s.tenant = g.tenant AND s.kind = g.kind AND s.graph_id = g.id"
)


def copy_with_synced(row: Any) -> tuple[GraphCopy, SyncedRow | None]:
    """A row of ``COPY_WITH_SYNCED``, decoded."""
    return GraphCopy(row[0], json.loads(row[1]), row[2], row[1]), (synced_row(row[3:]) if row[3] is not None else None)

# Each found by its index (tests/test_query_plans.py holds them to it).
DIRTY_IDS = "SELECT id FROM graph_objects WHERE tenant = ? AND kind = ? AND dirty = 1"
CLEAR_DIRTY = "UPDATE graph_objects SET dirty = 0 WHERE tenant = ? AND kind = ? AND dirty = 1"
FAILED_OBJECTS = ("SELECT graph_id, retry_at, quarantine_fingerprint FROM synced_objects"
                  " WHERE tenant = ? AND kind = ? AND retry_at IS NOT NULL")
OUT_OF_SCOPE_BEFORE = "SELECT graph_id FROM synced_objects WHERE tenant = ? AND kind = ? AND out_of_scope_since <= ?"
PHOTO_CHECKS_DUE = "SELECT user_id FROM photo_checks WHERE tenant = ? AND due_at <= ?"


class DueQueries:
    db: Database
    clock: Clock

    async def iter_with_synced(
        self, tenant: str, kind: str
    ) -> AsyncIterator[tuple[GraphCopy | None, SyncedRow | None]]:
        """Every Graph copy joined with its pushed state, then pushed objects without a copy."""
        async for row in self.db.stream(f"{COPY_WITH_SYNCED} WHERE g.tenant = ? AND g.kind = ? ORDER BY g.id",
                                        (tenant, kind)):
            yield copy_with_synced(row)
        async for row in self.db.stream(
            f"SELECT {SYNCED_COLUMNS} FROM synced_objects s WHERE s.tenant = ? AND s.kind = ? AND NOT EXISTS"
            " (SELECT 1 FROM graph_objects g WHERE g.tenant = s.tenant AND g.kind = s.kind AND g.id = s.graph_id)",
            (tenant, kind),
        ):
            yield None, synced_row(row)

    async def dirty_ids(self, tenant: str, kind: str) -> set[str]:
        """Copies merged or removed since the last applied plan."""
        return {
            row[0]
            for row in await self.db.fetchall(
                DIRTY_IDS, (tenant, kind)
            )
        }

    async def commit_run(self, tenant: str, links: Mapping[str, Mapping[str, str]], values: Mapping[str, str],
                         planned: Iterable[str]) -> None:
        """A run's end, in one transaction: its deltaLinks (resource -> key -> link), the markers of what
        its plan was made from, and the kinds whose dirty copies it planned (the run holds the tenant's
        lease, so nothing was merged since it read them)."""
        async with self.db.transaction() as conn:
            for resource, by_key in links.items():
                await write_delta_links(conn, tenant, resource, by_key, self.clock())
            for name, value in values.items():
                await conn.execute(
                    "INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                    (tenant, name, value),
                )
            for kind in planned:
                await conn.execute(CLEAR_DIRTY, (tenant, kind))

    async def failed_objects(self, tenant: str, kind: str) -> list[tuple[str, float, bool]]:
        """(graph id, retry at, quarantined) of every object whose last attempt failed."""
        return [
            (row[0], float(row[1]), row[2] is not None)
            for row in await self.db.fetchall(
                FAILED_OBJECTS, (tenant, kind)
            )
        ]

    async def out_of_scope_before(self, tenant: str, kind: str, before: float) -> set[str]:
        """Objects out of scope since ``before`` or earlier: their grace period is over."""
        return {
            row[0]
            for row in await self.db.fetchall(
                OUT_OF_SCOPE_BEFORE, (tenant, kind, before)
            )
        }

    async def photo_checks_due(self, tenant: str, now: float) -> set[str]:
        return {
            row[0]
            for row in await self.db.fetchall(
                PHOTO_CHECKS_DUE, (tenant, now)
            )
        }

    async def iter_with_synced_of(
        self, tenant: str, kind: str, ids: Iterable[str]
    ) -> AsyncIterator[tuple[GraphCopy, SyncedRow | None]]:
        """The Graph copies of ``ids`` joined with their pushed state, in id order (one query per 500)."""
        for chunk, marks in id_chunks(sorted(set(ids))):
            for row in await self.db.fetchall(
                f"{COPY_WITH_SYNCED} WHERE g.tenant = ? AND g.kind = ? AND g.id IN ({marks}) ORDER BY g.id",
                (tenant, kind, *chunk),
            ):
                yield copy_with_synced(row)

    async def synced_of(self, tenant: str, kind: str, ids: Iterable[str]) -> dict[str, SyncedRow]:
        """The pushed state of ``ids`` (one indexed look-up per 500)."""
        rows: dict[str, SyncedRow] = {}
        for chunk, marks in id_chunks(sorted(set(ids))):
            for row in await self.db.fetchall(
                f"SELECT {SYNCED_COLUMNS} FROM synced_objects s WHERE s.tenant = ? AND s.kind = ?"
                f" AND s.graph_id IN ({marks})", (tenant, kind, *chunk),
            ):
                rows[row[0]] = synced_row(row)
        return rows

    async def photo_checked(self, tenant: str, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` had their photo checked before (one indexed look-up per 500)."""
        checked: set[str] = set()
        for chunk, marks in id_chunks(set(user_ids)):
            checked.update(
                row[0]
                for row in await self.db.fetchall(
                    f"SELECT user_id FROM photo_checks WHERE tenant = ? AND user_id IN ({marks})", (tenant, *chunk)
                )
            )
        return checked
