"""Rows and queries of what was pushed to the PBX (``synced_objects``), the
bookkeeping of an applied chunk (one transaction), and the create journal."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.redact import short_reason
from state.attributes import BusyPushed, PresencePushed, record_busy, record_presence
from state.db import Database
from state.history import HistoryEntry, record_history
from state.store import Clock

FAILURES_BEFORE_QUARANTINE = 5
RETRY_FIRST_SECONDS = 3600.0  # a failed object is tried again after an hour,
RETRY_LAST_SECONDS = 86400.0  # then after twice as long each time, at most a day (sooner when it changes)


def retry_delay(failures: int) -> float:
    """How long an object that failed ``failures`` times in a row waits before it is tried again."""
    doublings: int = min(max(failures - 1, 0), 16)
    return min(RETRY_FIRST_SECONDS * 2.0**doublings, RETRY_LAST_SECONDS)


@dataclass(frozen=True, slots=True)
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
    input_hash: str | None = None  # what the pushed payload was made from (see plan_users.UserPlanner)
    retry_at: float | None = None  # a failed object: not tried again before this, unless it changed
    failed_fingerprint: str | None = None  # what it failed with


SYNCED_COLUMNS = (
    "graph_id, pbx_id, payload, payload_hash, etag, active, out_of_scope_since, photo_etag,"
    " last_push_at, failures, last_error, quarantine_fingerprint, input_hash, retry_at, failed_fingerprint"
)


def synced_row(row: Any) -> SyncedRow:
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
        input_hash=row[12],
        retry_at=row[13],
        failed_fingerprint=row[14],
    )


# --- the bookkeeping of applied writes ---


@dataclass(frozen=True, slots=True)
class Pushed:
    """The object is now as pushed: clears failures and quarantine, ends its journal entry."""

    kind: str
    graph_id: str
    pbx_id: str | None
    payload: dict[str, Any] | None
    payload_hash: str | None
    etag: str | None
    active: bool | None = None
    out_of_scope_since: float | None = None
    photo_etag: str | None = None
    extension: str | None = None  # the number it holds (allocated to it)
    input_hash: str | None = None  # what ``payload`` was made from (users)
    note: str | None = None  # written, but the PBX refused an optional part (kept as ``last_error``)
    # ``payload`` serialised once, when its hash was made (mapping.canonical_text): stored as is.
    # Whoever replaces ``payload`` replaces this too (None: serialised when stored).
    payload_text: str | None = field(default=None, repr=False, compare=False)

    # Copies made for every written object (10k on a first run of 10k users), so built directly:
    # ``dataclasses.replace`` cost ~0.9 s there. Each copies every field (tests/test_dataclass_copies.py).

    def written(self, pbx_id: str | None, etag: str | None, note: str | None) -> Pushed:
        """This entry once the PBX answered: its id and ETag as answered, and what it refused (``note``)."""
        return Pushed(self.kind, self.graph_id, pbx_id, self.payload, self.payload_hash, etag, self.active,
                      self.out_of_scope_since, self.photo_etag, self.extension, self.input_hash, note,
                      self.payload_text)

    def with_payload(self, payload: dict[str, Any], payload_text: str, payload_hash: str,
                     input_hash: str | None) -> Pushed:
        """This entry with the payload built for it (``payload_text`` serialised once, hashed as ``payload_hash``)."""
        return Pushed(self.kind, self.graph_id, self.pbx_id, payload, payload_hash, self.etag, self.active,
                      self.out_of_scope_since, self.photo_etag, self.extension, input_hash, self.note, payload_text)


@dataclass(frozen=True)
class Removed:
    """Deleted on the PBX: forget it, release its number, purge a deleted copy."""

    kind: str
    graph_id: str
    purge_copy: bool


@dataclass(frozen=True)
class Failed:
    kind: str
    graph_id: str
    error: str
    fingerprint: str


@dataclass(frozen=True)
class Tracked:
    """No write, but the time it left the scope changed."""

    kind: str
    graph_id: str
    out_of_scope_since: float | None


@dataclass(frozen=True)
class Remembered:
    """No write: the payload the current inputs make is the one on the PBX; remember those inputs."""

    kind: str
    graph_id: str
    input_hash: str


Bookkeeping = Pushed | Removed | Failed | Tracked | Remembered | BusyPushed | PresencePushed


class PushedQueries:
    db: Database
    clock: Clock

    async def synced(self, tenant: str, kind: str, graph_id: str) -> SyncedRow | None:
        row = await self.db.fetchone(
            f"SELECT {SYNCED_COLUMNS} FROM synced_objects WHERE tenant = ? AND kind = ? AND graph_id = ?",
            (tenant, kind, graph_id),
        )
        return None if row is None else synced_row(row)

    async def synced_rows(self, tenant: str, kind: str) -> dict[str, SyncedRow]:
        """Every pushed object of a kind (a kind that stays small: groups)."""
        return {
            row[0]: synced_row(row)
            for row in await self.db.fetchall(
                f"SELECT {SYNCED_COLUMNS} FROM synced_objects WHERE tenant = ? AND kind = ?", (tenant, kind)
            )
        }

    async def pbx_ids(self, tenant: str, kind: str) -> dict[str, str]:
        """Graph id -> PBX id of every object of a kind on the PBX."""
        return {
            row[0]: row[1]
            for row in await self.db.fetchall(
                "SELECT graph_id, pbx_id FROM synced_objects WHERE tenant = ? AND kind = ? AND pbx_id IS NOT NULL",
                (tenant, kind),
            )
        }

    async def count_synced(self, tenant: str, kind: str) -> int:
        row = await self.db.fetchone(
            "SELECT count(*) FROM synced_objects WHERE tenant = ? AND kind = ? AND pbx_id IS NOT NULL", (tenant, kind)
        )
        return int(row[0]) if row else 0

    async def active_users(self, tenant: str) -> list[tuple[str, str, str]]:
        """(graph id, PBX id, userPrincipalName) of every active synced user."""
        return [
            (r[0], r[1], str(r[2]))
            for r in await self.db.fetchall(
                f"SELECT s.graph_id, s.pbx_id, {self.db.json_text('g.data', 'userPrincipalName')} FROM synced_objects s"
                " JOIN graph_objects g ON g.tenant = s.tenant AND g.kind = 'user' AND g.id = s.graph_id"
                " WHERE s.tenant = ? AND s.kind = 'user' AND s.pbx_id IS NOT NULL AND s.active = 1 ORDER BY s.graph_id",
                (tenant,),
            )
        ]

    async def forget_synced(self, tenant: str, kind: str, graph_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM synced_objects WHERE tenant = ? AND kind = ? AND graph_id = ?", (tenant, kind, graph_id)
            )

    async def quarantined(self, tenant: str) -> list[tuple[str, str, str | None]]:
        return [
            (r[0], r[1], r[2])
            for r in await self.db.fetchall(
                "SELECT kind, graph_id, last_error FROM synced_objects WHERE tenant = ? AND quarantine_fingerprint IS NOT NULL"
                " ORDER BY kind, graph_id",
                (tenant,),
            )
        ]

    async def failing(self, tenant: str) -> list[tuple[str, str, int, str | None, float | None]]:
        """(kind, graph id, failures in a row, last error, retry at) of every failed object not quarantined."""
        return [
            (r[0], r[1], int(r[2]), r[3], r[4])
            for r in await self.db.fetchall(
                "SELECT kind, graph_id, failures, last_error, retry_at FROM synced_objects WHERE tenant = ?"
                " AND failures > 0 AND quarantine_fingerprint IS NULL ORDER BY kind, graph_id",
                (tenant,),
            )
        ]

    # --- the create journal ---

    async def journal_creates(self, tenant: str, creates: Sequence[tuple[str, str, str | None]]) -> None:
        """Note, before sending, the objects about to be created and the numbers
        they take (kind, graph id, number or None), in one transaction."""
        if not creates:
            return
        async with self.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO pending_creates (tenant, kind, graph_id, since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant, kind, graph_id) DO NOTHING",
                [(tenant, kind, graph_id, self.clock()) for kind, graph_id, _ in creates],
            )
            await _allocate(conn, tenant, [(kind, graph_id, n) for kind, graph_id, n in creates if n], self.clock())

    async def pending_creates(self, tenant: str, kind: str) -> set[str]:
        """Creates journaled but never confirmed: they may exist on the PBX already."""
        return {
            row[0]
            for row in await self.db.fetchall(
                "SELECT graph_id FROM pending_creates WHERE tenant = ? AND kind = ?", (tenant, kind)
            )
        }

    # --- one transaction per applied chunk ---

    async def apply_bookkeeping(self, tenant: str, entries: Iterable[Bookkeeping],
                                history: Sequence[HistoryEntry] = ()) -> set[str]:
        """Record a chunk's outcomes, and its writes in the objects' history, in one
        transaction; returns the ids now quarantined.

        Each record type has its own method, called with that type's entries."""
        by_type: dict[type, list[Any]] = {}
        for entry in entries:
            by_type.setdefault(type(entry), []).append(entry)
        if not by_type and not history:
            return set()
        now = self.clock()
        async with self.db.transaction() as conn:
            await record_history(conn, tenant, history, now)
            await _record_pushed(conn, tenant, by_type.get(Pushed, []), now)
            await _record_removed(conn, tenant, by_type.get(Removed, []), now)
            await _record_tracked(conn, tenant, by_type.get(Tracked, []))
            await _record_remembered(conn, tenant, by_type.get(Remembered, []))
            await record_busy(conn, tenant, by_type.get(BusyPushed, []))
            await record_presence(conn, tenant, by_type.get(PresencePushed, []))
            return await _record_failed(conn, tenant, by_type.get(Failed, []), now)


async def _record_pushed(conn: Any, tenant: str, entries: list[Pushed], now: float) -> None:
    """The object is as pushed: its row, the end of its journal entry, the number it holds."""
    await conn.executemany(
        "INSERT INTO synced_objects (tenant, kind, graph_id, pbx_id, payload, payload_hash, etag, active,"
        " out_of_scope_since, photo_etag, last_push_at, updated_at, input_hash, failures, last_error,"
        " quarantine_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, NULL)"
        " ON CONFLICT (tenant, kind, graph_id) DO UPDATE SET pbx_id = excluded.pbx_id,"
        " payload = excluded.payload, payload_hash = excluded.payload_hash, etag = excluded.etag,"
        " active = excluded.active, out_of_scope_since = excluded.out_of_scope_since,"
        " photo_etag = excluded.photo_etag, last_push_at = excluded.last_push_at,"
        " updated_at = excluded.updated_at, input_hash = excluded.input_hash, failures = 0,"
        " last_error = excluded.last_error,"
        " quarantine_fingerprint = NULL, retry_at = NULL, failed_fingerprint = NULL",
        [
            (
                tenant,
                e.kind,
                e.graph_id,
                e.pbx_id,
                e.payload_text or (json.dumps(e.payload) if e.payload is not None else None),
                e.payload_hash,
                e.etag,
                None if e.active is None else int(e.active),
                e.out_of_scope_since,
                e.photo_etag,
                now,
                now,
                e.input_hash,
                e.note,
            )
            for e in entries
        ],
    )
    await conn.executemany(
        "DELETE FROM pending_creates WHERE tenant = ? AND kind = ? AND graph_id = ?",
        [(tenant, e.kind, e.graph_id) for e in entries],
    )
    await _allocate(conn, tenant, [(e.kind, e.graph_id, e.extension) for e in entries if e.extension], now)


async def _record_removed(conn: Any, tenant: str, entries: list[Removed], now: float) -> None:
    """Gone from the PBX: forget it, end its journal entry, let its number cool down, purge a deleted copy."""
    keys = [(tenant, e.kind, e.graph_id) for e in entries]
    await conn.executemany("DELETE FROM pending_creates WHERE tenant = ? AND kind = ? AND graph_id = ?", keys)
    await conn.executemany("DELETE FROM synced_objects WHERE tenant = ? AND kind = ? AND graph_id = ?", keys)
    await conn.executemany(
        "UPDATE extension_allocations SET released_at = ? WHERE tenant = ? AND owner_kind = ?"
        " AND owner_graph_id = ? AND released_at IS NULL",
        [(now, *key) for key in keys],
    )
    await conn.executemany(
        "DELETE FROM graph_objects WHERE tenant = ? AND kind = ? AND id = ?",
        [(tenant, e.kind, e.graph_id) for e in entries if e.purge_copy],
    )


async def _record_tracked(conn: Any, tenant: str, entries: list[Tracked]) -> None:
    await conn.executemany(
        "UPDATE synced_objects SET out_of_scope_since = ? WHERE tenant = ? AND kind = ? AND graph_id = ?",
        [(e.out_of_scope_since, tenant, e.kind, e.graph_id) for e in entries],
    )


async def _record_remembered(conn: Any, tenant: str, entries: list[Remembered]) -> None:
    await conn.executemany(
        "UPDATE synced_objects SET input_hash = ? WHERE tenant = ? AND kind = ? AND graph_id = ?",
        [(e.input_hash, tenant, e.kind, e.graph_id) for e in entries],
    )


async def _record_failed(conn: Any, tenant: str, entries: list[Failed], now: float) -> set[str]:
    """One more failure each; returns the ids that reached quarantine (bound to their fingerprint)."""
    quarantined: set[str] = set()
    for entry in entries:
        row = await conn.fetchone(
            "INSERT INTO synced_objects (tenant, kind, graph_id, updated_at, failures, last_error)"
            " VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (tenant, kind, graph_id) DO UPDATE SET"
            " failures = synced_objects.failures + 1, last_error = excluded.last_error, updated_at = excluded.updated_at"
            " RETURNING failures",
            (tenant, entry.kind, entry.graph_id, now, short_reason(entry.error)),
        )
        failures = int(row[0]) if row is not None else 1
        await conn.execute(
            "UPDATE synced_objects SET retry_at = ?, failed_fingerprint = ? WHERE tenant = ? AND kind = ? AND graph_id = ?",
            (now + retry_delay(failures), entry.fingerprint, tenant, entry.kind, entry.graph_id),
        )
        if failures >= FAILURES_BEFORE_QUARANTINE:
            quarantined.add(entry.graph_id)
            await conn.execute(
                "UPDATE synced_objects SET quarantine_fingerprint = ? WHERE tenant = ? AND kind = ? AND graph_id = ?",
                (entry.fingerprint, tenant, entry.kind, entry.graph_id),
            )
    return quarantined


async def _allocate(conn: Any, tenant: str, owners: Sequence[tuple[str, str, str | None]], now: float) -> None:
    """Each owner (kind, graph id) holds its number; a different earlier one it held is dropped."""
    await conn.executemany(
        "DELETE FROM extension_allocations WHERE tenant = ? AND owner_kind = ? AND owner_graph_id = ?"
        " AND released_at IS NULL AND number != ?",
        [(tenant, kind, graph_id, number) for kind, graph_id, number in owners],
    )
    await conn.executemany(
        "INSERT INTO extension_allocations (tenant, number, owner_kind, owner_graph_id, allocated_at, released_at)"
        " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (tenant, number) DO UPDATE SET"
        " owner_kind = excluded.owner_kind, owner_graph_id = excluded.owner_graph_id, released_at = NULL",
        [(tenant, number, kind, graph_id, now) for kind, graph_id, number in owners],
    )
