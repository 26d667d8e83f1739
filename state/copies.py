"""Rows and queries of the stored Graph copies (``graph_objects``).

Contacts and events carry their mailbox (``owner``) and contacts their
``folder`` in indexed columns, so per-mailbox work is an index search, never
a scan of every copy of the tenant.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from state.db import Database
from state.store import Clock

ID_CHUNK = 500  # ids per IN (...) list, well below SQLite's variable limit
# Kinds planned by change: a merged or removed copy of these is marked ``dirty``
# until a plan that saw it was applied (``state.due``).
PLANNED_BY_CHANGE = frozenset({"user", "contact", "group"})
# By the indexes of 0015_mailbox_purpose ({upn} and {said}: the backend's JSON text of those keys).
MAILBOXES_OF_PURPOSE = (
    "SELECT m.id, {upn} FROM graph_objects m JOIN graph_objects u ON u.tenant = m.tenant AND u.kind = 'user'"
    " AND u.id = m.id WHERE m.tenant = ? AND m.kind = 'mailbox' AND {said} = ? AND u.removed IS NULL"
)
LIVE_USER_BY_UPN = ("SELECT id, {upn} FROM graph_objects WHERE tenant = ? AND kind = 'user' AND lower({upn}) = lower(?)"
                    " AND removed IS NULL")


def id_chunks(ids: Iterable[str]) -> Iterator[tuple[list[str], str]]:
    """``ids`` in chunks of ``ID_CHUNK``, each with its ``?, ?, ...`` placeholders for an IN list."""
    wanted = list(ids)
    for start in range(0, len(wanted), ID_CHUNK):
        chunk = wanted[start : start + ID_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


@dataclass(frozen=True)
class GraphCopy:
    id: str
    data: dict[str, Any]
    removed: str | None
    text: str | None = None  # the stored JSON, when read from the state (what the planner's input hash covers)


class CopyQueries:
    db: Database
    clock: Clock

    async def merge_changes(
        self,
        tenant: str,
        kind: str,
        changes: Iterable[Mapping[str, Any]],
        owner: str | None = None,
        folder: str | None = None,
    ) -> None:
        """Merge one page of delta changes into the stored copies (partial objects welcome)."""
        changes = list(changes)
        if not changes:
            return
        now = self.clock()
        dirty = int(kind in PLANNED_BY_CHANGE)
        async with self.db.transaction() as conn:
            existing = await self._existing(conn, tenant, kind, [str(c["id"]) for c in changes])
            rows: list[tuple[Any, ...]] = []
            for change in changes:
                id_ = str(change["id"])
                removed = change.get("@removed")
                data = existing.get(id_, {"id": id_})
                if isinstance(removed, Mapping):
                    rows.append(
                        (
                            tenant,
                            kind,
                            id_,
                            json.dumps(data),
                            str(removed.get("reason") or "deleted"),
                            now,
                            owner,
                            folder,
                            dirty,
                        )
                    )
                    continue
                data.update({k: v for k, v in change.items() if not k.startswith("@")})
                rows.append((tenant, kind, id_, json.dumps(data), None, now, owner, folder, dirty))
                existing[id_] = data
            await conn.executemany(
                "INSERT INTO graph_objects (tenant, kind, id, data, removed, updated_at, owner, folder, dirty)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, kind, id) DO UPDATE SET data = excluded.data,"
                " removed = excluded.removed, updated_at = excluded.updated_at, dirty = excluded.dirty,"
                " owner = coalesce(excluded.owner, graph_objects.owner),"
                " folder = coalesce(excluded.folder, graph_objects.folder)",
                rows,
            )

    @staticmethod
    async def _existing(conn: Any, tenant: str, kind: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        existing: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            existing.update(
                {
                    row[0]: json.loads(row[1])
                    for row in await conn.fetchall(
                        f"SELECT id, data FROM graph_objects WHERE tenant = ? AND kind = ? AND id IN ({marks})",
                        (tenant, kind, *chunk),
                    )
                }
            )
        return existing

    async def mailboxes_of_purpose(self, tenant: str, purpose: str) -> dict[str, str]:
        """Live users whose stored mailboxSettings say ``purpose`` ("shared", "unreadable"): id -> UPN,
        by the purpose index (``0015_mailbox_purpose``), never reading every user's copy."""
        sql = MAILBOXES_OF_PURPOSE.format(upn=self.db.json_text("u.data", "userPrincipalName"),
                                          said=self.db.json_text("m.data", "userPurpose"))
        rows = await self.db.fetchall(sql, (tenant, purpose))
        return {row[0]: str(row[1] or row[0]) for row in rows}

    async def known_ids(self, tenant: str, kind: str, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` have a stored copy (one indexed look-up per 500 ids)."""
        known: set[str] = set()
        for chunk, marks in id_chunks(ids):
            known.update(
                row[0]
                for row in await self.db.fetchall(
                    f"SELECT id FROM graph_objects WHERE tenant = ? AND kind = ? AND id IN ({marks})",
                    (tenant, kind, *chunk),
                )
            )
        return known

    async def mark_missing_removed(self, tenant: str, kind: str, seen: set[str]) -> list[str]:
        """After a full round: what it no longer returned is gone (reconciliation)."""
        missing = []
        async for (id_,) in self.db.stream(
            "SELECT id FROM graph_objects WHERE tenant = ? AND kind = ? AND removed IS NULL", (tenant, kind)
        ):
            if id_ not in seen:
                missing.append(id_)
        await self._mark_removed(tenant, kind, missing, "changed")
        return missing

    async def remove_unseen(self, tenant: str, kind: str, owner: str, folder: str, seen: set[str]) -> int:
        """After a full round of one folder: its stored copies the round no longer returned are gone."""
        missing = [
            row[0]
            for row in await self.db.fetchall(
                "SELECT id FROM graph_objects WHERE tenant = ? AND kind = ? AND owner = ? AND folder = ? AND removed IS NULL",
                (tenant, kind, owner, folder),
            )
            if row[0] not in seen
        ]
        await self._mark_removed(tenant, kind, missing, "deleted")
        return len(missing)

    async def _mark_removed(self, tenant: str, kind: str, ids: list[str], reason: str) -> None:
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE graph_objects SET removed = ?, updated_at = ?, dirty = ? WHERE tenant = ? AND kind = ? AND id = ?",
                [(reason, self.clock(), int(kind in PLANNED_BY_CHANGE), tenant, kind, id_) for id_ in ids],
            )

    async def remove_folder_copies(self, tenant: str, kind: str, owner: str, folder: str) -> None:
        """A folder is gone: its copies are removed with it."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE graph_objects SET removed = 'deleted', updated_at = ?, dirty = ? WHERE tenant = ? AND kind = ?"
                " AND owner = ? AND folder = ?",
                (self.clock(), int(kind in PLANNED_BY_CHANGE), tenant, kind, owner, folder),
            )

    async def mark_owned_dirty(self, tenant: str, kind: str, owners: Iterable[str]) -> None:
        """Every copy of these owners is planned again (its mailbox changed), one indexed update per 500."""
        async with self.db.transaction() as conn:
            for chunk, marks in id_chunks(sorted(set(owners))):
                await conn.execute(
                    f"UPDATE graph_objects SET dirty = 1 WHERE tenant = ? AND kind = ? AND owner IN ({marks})",
                    (tenant, kind, *chunk),
                )

    async def purge_owner(self, tenant: str, kind: str, owner: str) -> None:
        """Forget an owner's copies (no tombstones), e.g. a calendar window being re-based."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM graph_objects WHERE tenant = ? AND kind = ? AND owner = ?", (tenant, kind, owner)
            )

    async def copies_of_owners(self, tenant: str, kind: str, owners: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The live copies of each owner, for many owners in one indexed query per 500."""
        wanted = list(owners)
        out: dict[str, list[dict[str, Any]]] = {owner: [] for owner in wanted}
        for start in range(0, len(wanted), ID_CHUNK):
            chunk = wanted[start : start + ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            for owner, data in await self.db.fetchall(
                f"SELECT owner, data FROM graph_objects WHERE tenant = ? AND kind = ? AND owner IN ({marks})"
                " AND removed IS NULL",
                (tenant, kind, *chunk),
            ):
                out[owner].append(json.loads(data))
        return out

    async def purge_graph_object(self, tenant: str, kind: str, id_: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM graph_objects WHERE tenant = ? AND kind = ? AND id = ?", (tenant, kind, id_)
            )

    async def graph_copy(self, tenant: str, kind: str, id_: str) -> GraphCopy | None:
        row = await self.db.fetchone(
            "SELECT id, data, removed FROM graph_objects WHERE tenant = ? AND kind = ? AND id = ?", (tenant, kind, id_)
        )
        return None if row is None else GraphCopy(row[0], json.loads(row[1]), row[2])

    async def graph_copies(self, tenant: str, kind: str, ids: Iterable[str]) -> dict[str, GraphCopy]:
        """Many copies by id, in one query per 500 ids."""
        wanted = list(ids)
        out: dict[str, GraphCopy] = {}
        for start in range(0, len(wanted), ID_CHUNK):
            chunk = wanted[start : start + ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in await self.db.fetchall(
                f"SELECT id, data, removed FROM graph_objects WHERE tenant = ? AND kind = ? AND id IN ({marks})",
                (tenant, kind, *chunk),
            ):
                out[row[0]] = GraphCopy(row[0], json.loads(row[1]), row[2], row[1])
        return out

    async def find_user(self, tenant: str, reference: str) -> GraphCopy | None:
        """A user by object ID, or by userPrincipalName (case-insensitive)."""
        copy = await self.graph_copy(tenant, "user", reference)
        if copy is not None:
            return copy
        row = await self.db.fetchone(
            "SELECT id, data, removed FROM graph_objects WHERE tenant = ? AND kind = 'user'"
            f" AND lower({self.db.json_text('data', 'userPrincipalName')}) = lower(?)",
            (tenant, reference),
        )
        return None if row is None else GraphCopy(row[0], json.loads(row[1]), row[2])

    async def live_user_named(self, tenant: str, reference: str) -> tuple[str, str] | None:
        """(id, userPrincipalName) of the live user with this object ID or UPN (case-insensitive), by
        the key or the UPN index, without decoding the copy."""
        upn = self.db.json_text("data", "userPrincipalName")
        by_id = f"SELECT id, {upn} FROM graph_objects WHERE tenant = ? AND kind = 'user' AND id = ? AND removed IS NULL"
        for sql in (by_id, LIVE_USER_BY_UPN.format(upn=upn)):
            row = await self.db.fetchone(sql, (tenant, reference))
            if row is not None:
                return row[0], str(row[1] or row[0])
        return None

    async def count_copies(self, tenant: str, kind: str) -> int:
        """How many copies of a kind are stored: how many delta pages a round of that kind may explain."""
        row = await self.db.fetchone("SELECT COUNT(*) FROM graph_objects WHERE tenant = ? AND kind = ?", (tenant, kind))
        return int(row[0]) if row is not None else 0

    async def iter_copies(self, tenant: str, kind: str) -> AsyncIterator[GraphCopy]:
        """Every stored copy of a kind, streamed in id order."""
        async for row in self.db.stream(
            "SELECT id, data, removed FROM graph_objects WHERE tenant = ? AND kind = ? ORDER BY id", (tenant, kind)
        ):
            yield GraphCopy(row[0], json.loads(row[1]), row[2])
