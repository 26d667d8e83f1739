"""Rows and queries of the sync engine: Graph copies, pushed objects,
extension allocations, held deprovisions and group membership."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from state.db import Database
from state.store import Clock

FAILURES_BEFORE_QUARANTINE = 5


@dataclass(frozen=True)
class GraphCopy:
    id: str
    data: dict[str, Any]
    removed: str | None


@dataclass(frozen=True)
class SyncedRow:
    graph_id: str
    pbx_id: str | None
    payload: dict[str, Any] | None
    payload_hash: str | None
    etag: str | None
    active: bool | None
    out_of_scope_since: float | None
    photo_etag: str | None
    last_push_at: float | None
    failures: int
    last_error: str | None
    quarantine_fingerprint: str | None


_SYNCED_COLUMNS = (
    "graph_id, pbx_id, payload, payload_hash, etag, active, out_of_scope_since, photo_etag,"
    " last_push_at, failures, last_error, quarantine_fingerprint"
)


def _synced(row: Any) -> SyncedRow:
    return SyncedRow(
        graph_id=row[0],
        pbx_id=row[1],
        payload=json.loads(row[2]) if row[2] else None,
        payload_hash=row[3],
        etag=row[4],
        active=None if row[5] is None else bool(row[5]),
        out_of_scope_since=row[6],
        photo_etag=row[7],
        last_push_at=row[8],
        failures=int(row[9] or 0),
        last_error=row[10],
        quarantine_fingerprint=row[11],
    )


class SyncStore:
    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.db = db
        self.clock = clock

    # --- Graph copies ---

    async def merge_changes(self, tenant: str, kind: str, changes: Iterable[Mapping[str, Any]]) -> None:
        """Merge one page of delta changes into the stored copies (partial objects welcome)."""
        changes = list(changes)
        if not changes:
            return
        ids = [str(change["id"]) for change in changes]
        now = self.clock()
        async with self.db.transaction() as conn:
            existing: dict[str, dict[str, Any]] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                async with conn.execute(
                    f"SELECT id, data FROM graph_objects WHERE tenant = ? AND kind = ? AND id IN ({marks})",
                    (tenant, kind, *chunk),
                ) as cursor:
                    existing.update({row[0]: json.loads(row[1]) for row in await cursor.fetchall()})
            rows: list[tuple[str, str, str, str, str | None, float]] = []
            for change in changes:
                id_ = str(change["id"])
                removed = change.get("@removed")
                data = existing.get(id_, {"id": id_})
                if isinstance(removed, Mapping):
                    reason = str(removed.get("reason") or "deleted")
                    rows.append((tenant, kind, id_, json.dumps(data), reason, now))
                    continue
                data.update({k: v for k, v in change.items() if not k.startswith("@")})
                rows.append((tenant, kind, id_, json.dumps(data), None, now))
                existing[id_] = data
            await conn.executemany(
                "INSERT INTO graph_objects (tenant, kind, id, data, removed, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (tenant, kind, id) DO UPDATE SET data = excluded.data, removed = excluded.removed,"
                " updated_at = excluded.updated_at",
                rows,
            )

    async def mark_missing_removed(self, tenant: str, kind: str, seen: set[str]) -> list[str]:
        """After a full round: what it no longer returned is gone (reconciliation)."""
        missing = []
        async with self.db.conn.execute(
            "SELECT id FROM graph_objects WHERE tenant = ? AND kind = ? AND removed IS NULL", (tenant, kind)
        ) as cursor:
            async for (id_,) in cursor:
                if id_ not in seen:
                    missing.append(id_)
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE graph_objects SET removed = 'changed', updated_at = ? WHERE tenant = ? AND kind = ? AND id = ?",
                [(self.clock(), tenant, kind, id_) for id_ in missing],
            )
        return missing

    async def remove_where(self, tenant: str, kind: str, key: str, value: str, key2: str, value2: str) -> None:
        """Mark removed the copies whose JSON fields ``key`` and ``key2`` hold these values."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE graph_objects SET removed = 'deleted', updated_at = ? WHERE tenant = ? AND kind = ?"
                f" AND json_extract(data, '$.{key}') = ? AND json_extract(data, '$.{key2}') = ?",
                (self.clock(), tenant, kind, value, value2),
            )

    async def remove_unseen(self, tenant: str, kind: str, owner: str, folder: str, seen: set[str]) -> int:
        """After a full round of one folder: its stored contacts the round no longer returned are gone."""
        async with self.db.conn.execute(
            "SELECT id FROM graph_objects WHERE tenant = ? AND kind = ? AND removed IS NULL"
            " AND json_extract(data, '$._owner') = ? AND json_extract(data, '$._folder') = ?",
            (tenant, kind, owner, folder),
        ) as cursor:
            missing = [row[0] for row in await cursor.fetchall() if row[0] not in seen]
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE graph_objects SET removed = 'deleted', updated_at = ? WHERE tenant = ? AND kind = ? AND id = ?",
                [(self.clock(), tenant, kind, id_) for id_ in missing],
            )
        return len(missing)

    async def purge_where(self, tenant: str, kind: str, key: str, value: str) -> None:
        """Forget the copies whose JSON field ``key`` holds ``value`` (no tombstone)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                f"DELETE FROM graph_objects WHERE tenant = ? AND kind = ? AND json_extract(data, '$.{key}') = ?",
                (tenant, kind, value),
            )

    async def copies_where(self, tenant: str, kind: str, key: str, value: str) -> list[dict[str, Any]]:
        """The live copies whose JSON field ``key`` holds ``value``."""
        async with self.db.conn.execute(
            f"SELECT data FROM graph_objects WHERE tenant = ? AND kind = ? AND removed IS NULL"
            f" AND json_extract(data, '$.{key}') = ?",
            (tenant, kind, value),
        ) as cursor:
            return [json.loads(row[0]) for row in await cursor.fetchall()]

    async def purge_graph_object(self, tenant: str, kind: str, id_: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM graph_objects WHERE tenant = ? AND kind = ? AND id = ?", (tenant, kind, id_))

    async def graph_copy(self, tenant: str, kind: str, id_: str) -> GraphCopy | None:
        async with self.db.conn.execute(
            "SELECT id, data, removed FROM graph_objects WHERE tenant = ? AND kind = ? AND id = ?", (tenant, kind, id_)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else GraphCopy(row[0], json.loads(row[1]), row[2])

    async def find_user(self, tenant: str, reference: str) -> GraphCopy | None:
        """A user by object ID, or by userPrincipalName (case-insensitive)."""
        copy = await self.graph_copy(tenant, "user", reference)
        if copy is not None:
            return copy
        async with self.db.conn.execute(
            "SELECT id, data, removed FROM graph_objects WHERE tenant = ? AND kind = 'user'"
            " AND lower(json_extract(data, '$.userPrincipalName')) = lower(?)",
            (tenant, reference),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else GraphCopy(row[0], json.loads(row[1]), row[2])

    async def iter_with_synced(self, tenant: str, kind: str) -> AsyncIterator[tuple[GraphCopy | None, SyncedRow | None]]:
        """Every Graph copy joined with its pushed state, and pushed objects without a copy."""
        async with self.db.conn.execute(
            f"SELECT g.id, g.data, g.removed, {', '.join('s.' + c.strip() for c in _SYNCED_COLUMNS.split(','))}"
            " FROM graph_objects g LEFT JOIN synced_objects s"
            " ON s.tenant = g.tenant AND s.kind = g.kind AND s.graph_id = g.id"
            " WHERE g.tenant = ? AND g.kind = ? ORDER BY g.id",
            (tenant, kind),
        ) as cursor:
            async for row in cursor:
                copy = GraphCopy(row[0], json.loads(row[1]), row[2])
                yield copy, (_synced(row[3:]) if row[3] is not None else None)
        async with self.db.conn.execute(
            f"SELECT {_SYNCED_COLUMNS} FROM synced_objects s WHERE s.tenant = ? AND s.kind = ? AND NOT EXISTS"
            " (SELECT 1 FROM graph_objects g WHERE g.tenant = s.tenant AND g.kind = s.kind AND g.id = s.graph_id)",
            (tenant, kind),
        ) as cursor:
            async for row in cursor:
                yield None, _synced(row)

    # --- pushed objects ---

    async def synced(self, tenant: str, kind: str, graph_id: str) -> SyncedRow | None:
        async with self.db.conn.execute(
            f"SELECT {_SYNCED_COLUMNS} FROM synced_objects WHERE tenant = ? AND kind = ? AND graph_id = ?",
            (tenant, kind, graph_id),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _synced(row)

    async def pbx_ids(self, tenant: str, kind: str) -> dict[str, str]:
        """Graph id -> PBX id of every object of a kind on the PBX."""
        async with self.db.conn.execute(
            "SELECT graph_id, pbx_id FROM synced_objects WHERE tenant = ? AND kind = ? AND pbx_id IS NOT NULL",
            (tenant, kind),
        ) as cursor:
            return {row[0]: row[1] for row in await cursor.fetchall()}

    async def synced_ids(self, tenant: str, kind: str) -> list[str]:
        return list(await self.pbx_ids(tenant, kind))

    async def count_synced(self, tenant: str, kind: str) -> int:
        async with self.db.conn.execute(
            "SELECT count(*) FROM synced_objects WHERE tenant = ? AND kind = ? AND pbx_id IS NOT NULL", (tenant, kind)
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def record_push(
        self,
        tenant: str,
        kind: str,
        graph_id: str,
        *,
        pbx_id: str | None,
        payload: Mapping[str, Any] | None,
        payload_hash: str | None,
        etag: str | None,
        active: bool | None,
        out_of_scope_since: float | None,
        photo_etag: str | None,
    ) -> None:
        """The object now is as pushed: clears failures and quarantine."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO synced_objects (tenant, kind, graph_id, pbx_id, payload, payload_hash, etag, active,"
                " out_of_scope_since, photo_etag, last_push_at, updated_at, failures, last_error, quarantine_fingerprint)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL)"
                " ON CONFLICT (tenant, kind, graph_id) DO UPDATE SET pbx_id = excluded.pbx_id,"
                " payload = excluded.payload, payload_hash = excluded.payload_hash, etag = excluded.etag,"
                " active = excluded.active, out_of_scope_since = excluded.out_of_scope_since,"
                " photo_etag = excluded.photo_etag, last_push_at = excluded.last_push_at,"
                " updated_at = excluded.updated_at, failures = 0, last_error = NULL, quarantine_fingerprint = NULL",
                (tenant, kind, graph_id, pbx_id, json.dumps(payload) if payload is not None else None, payload_hash,
                 etag, None if active is None else int(active), out_of_scope_since, photo_etag, self.clock(), self.clock()),
            )

    async def journal_pending(self, tenant: str, kind: str, graph_id: str, marker: str) -> None:
        """Note that an object is about to be created (found by externalId after a crash)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO synced_objects (tenant, kind, graph_id, payload_hash, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (tenant, kind, graph_id) DO UPDATE SET payload_hash = excluded.payload_hash"
                " WHERE synced_objects.pbx_id IS NULL",
                (tenant, kind, graph_id, marker, self.clock()),
            )

    async def active_users(self, tenant: str) -> list[tuple[str, str, str]]:
        """(graph id, PBX id, userPrincipalName) of every active synced user."""
        async with self.db.conn.execute(
            "SELECT s.graph_id, s.pbx_id, json_extract(g.data, '$.userPrincipalName') FROM synced_objects s"
            " JOIN graph_objects g ON g.tenant = s.tenant AND g.kind = 'user' AND g.id = s.graph_id"
            " WHERE s.tenant = ? AND s.kind = 'user' AND s.pbx_id IS NOT NULL AND s.active = 1 ORDER BY s.graph_id",
            (tenant,),
        ) as cursor:
            return [(r[0], r[1], str(r[2])) for r in await cursor.fetchall()]

    async def set_out_of_scope_since(self, tenant: str, kind: str, graph_id: str, since: float | None) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE synced_objects SET out_of_scope_since = ? WHERE tenant = ? AND kind = ? AND graph_id = ?",
                (since, tenant, kind, graph_id),
            )

    async def forget_synced(self, tenant: str, kind: str, graph_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM synced_objects WHERE tenant = ? AND kind = ? AND graph_id = ?", (tenant, kind, graph_id)
            )

    async def record_failure(self, tenant: str, kind: str, graph_id: str, error: str, fingerprint: str) -> bool:
        """Count a failed push; returns True when the object is now quarantined."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO synced_objects (tenant, kind, graph_id, updated_at, failures, last_error)"
                " VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (tenant, kind, graph_id) DO UPDATE SET"
                " failures = failures + 1, last_error = excluded.last_error, updated_at = excluded.updated_at",
                (tenant, kind, graph_id, self.clock(), error),
            )
            async with conn.execute(
                "SELECT failures FROM synced_objects WHERE tenant = ? AND kind = ? AND graph_id = ?",
                (tenant, kind, graph_id),
            ) as cursor:
                row = await cursor.fetchone()
            quarantined = row is not None and int(row[0]) >= FAILURES_BEFORE_QUARANTINE
            if quarantined:
                await conn.execute(
                    "UPDATE synced_objects SET quarantine_fingerprint = ? WHERE tenant = ? AND kind = ? AND graph_id = ?",
                    (fingerprint, tenant, kind, graph_id),
                )
        return quarantined

    async def quarantined(self, tenant: str) -> list[tuple[str, str, str | None]]:
        async with self.db.conn.execute(
            "SELECT kind, graph_id, last_error FROM synced_objects WHERE tenant = ? AND quarantine_fingerprint IS NOT NULL"
            " ORDER BY kind, graph_id",
            (tenant,),
        ) as cursor:
            return [(r[0], r[1], r[2]) for r in await cursor.fetchall()]

    # --- extension numbers ---

    async def allocations(self, tenant: str) -> list[tuple[str, str, str, float | None]]:
        """(number, owner kind, owner graph id, released_at) for every number ever handed out."""
        async with self.db.conn.execute(
            "SELECT number, owner_kind, owner_graph_id, released_at FROM extension_allocations WHERE tenant = ?",
            (tenant,),
        ) as cursor:
            return [(r[0], r[1], r[2], r[3]) for r in await cursor.fetchall()]

    async def allocate(self, tenant: str, number: str, owner_kind: str, owner_graph_id: str) -> None:
        """Record a number before the object that uses it is created (crash safety)."""
        async with self.db.transaction() as conn:
            # A number allocated earlier but never used (the PBX refused it) is dropped.
            await conn.execute(
                "DELETE FROM extension_allocations WHERE tenant = ? AND owner_kind = ? AND owner_graph_id = ?"
                " AND released_at IS NULL AND number != ?",
                (tenant, owner_kind, owner_graph_id, number),
            )
            await conn.execute(
                "INSERT INTO extension_allocations (tenant, number, owner_kind, owner_graph_id, allocated_at, released_at)"
                " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (tenant, number) DO UPDATE SET"
                " owner_kind = excluded.owner_kind, owner_graph_id = excluded.owner_graph_id,"
                " allocated_at = excluded.allocated_at, released_at = NULL",
                (tenant, number, owner_kind, owner_graph_id, self.clock()),
            )

    async def release(self, tenant: str, owner_kind: str, owner_graph_id: str) -> None:
        """The owner is deleted: its number enters the reuse cool-down."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE extension_allocations SET released_at = ? WHERE tenant = ? AND owner_kind = ?"
                " AND owner_graph_id = ? AND released_at IS NULL",
                (self.clock(), tenant, owner_kind, owner_graph_id),
            )

    # --- the mass-deletion guard ---

    async def hold(self, tenant: str, held: Mapping[str, str]) -> None:
        """Replace the held set (graph id -> action), keeping approvals of ids still held."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT graph_id FROM held_deprovisions WHERE tenant = ? AND approved = 1", (tenant,)
            ) as cursor:
                approved = {row[0] for row in await cursor.fetchall()}
            await conn.execute("DELETE FROM held_deprovisions WHERE tenant = ?", (tenant,))
            await conn.executemany(
                "INSERT INTO held_deprovisions (tenant, graph_id, action, held_at, approved) VALUES (?, ?, ?, ?, ?)",
                [(tenant, id_, action, self.clock(), int(id_ in approved)) for id_, action in held.items()],
            )

    async def held(self, tenant: str) -> dict[str, tuple[str, bool]]:
        async with self.db.conn.execute(
            "SELECT graph_id, action, approved FROM held_deprovisions WHERE tenant = ?", (tenant,)
        ) as cursor:
            return {r[0]: (r[1], bool(r[2])) for r in await cursor.fetchall()}

    async def approve_held(self, tenant: str) -> int:
        """Release exactly the currently held set on the next run."""
        async with self.db.transaction() as conn:
            cursor = await conn.execute("UPDATE held_deprovisions SET approved = 1 WHERE tenant = ?", (tenant,))
            return int(cursor.rowcount)

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

    async def clear_group_members(self, tenant: str, group_ids: Iterable[str]) -> None:
        async with self.db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM group_members WHERE tenant = ? AND group_id = ?", [(tenant, g) for g in group_ids]
            )

    async def members_of(self, tenant: str, group_ids: Iterable[str]) -> set[str]:
        ids = list(group_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        async with self.db.conn.execute(
            f"SELECT DISTINCT member_id FROM group_members WHERE tenant = ? AND group_id IN ({marks})", (tenant, *ids)
        ) as cursor:
            return {row[0] for row in await cursor.fetchall()}

    async def names_with_prefix(self, tenant: str, prefix: str) -> list[str]:
        """The bookkeeping names that start with ``prefix``, prefix removed."""
        async with self.db.conn.execute(
            "SELECT name FROM tenant_sync_state WHERE tenant = ? AND substr(name, 1, ?) = ? ORDER BY name",
            (tenant, len(prefix), prefix),
        ) as cursor:
            return [row[0][len(prefix):] for row in await cursor.fetchall()]

    async def try_lock(self, tenant: str, owner: str, lease_seconds: float, alive: Callable[[str], bool]) -> str | None:
        """Take the tenant's run lock; returns the current holder when someone else has it."""
        now = self.clock()
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT value FROM tenant_sync_state WHERE tenant = ? AND name = 'run-lock'", (tenant,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                holder, _, expires = str(row[0]).rpartition("@")
                if holder != owner and float(expires) > now and alive(holder):
                    return holder
            await conn.execute(
                "INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, 'run-lock', ?)"
                " ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                (tenant, f"{owner}@{now + lease_seconds}"),
            )
        return None

    async def unlock(self, tenant: str, owner: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM tenant_sync_state WHERE tenant = ? AND name = 'run-lock' AND value LIKE ?",
                (tenant, f"{owner}@%"),
            )

    async def value(self, tenant: str, name: str) -> str | None:
        async with self.db.conn.execute(
            "SELECT value FROM tenant_sync_state WHERE tenant = ? AND name = ?", (tenant, name)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def set_value(self, tenant: str, name: str, value: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                (tenant, name, value),
            )
