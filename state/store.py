"""Rows and queries of the state database; logic elsewhere never builds SQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from daemon.redact import REASON_LIMIT, redact_value, short_reason
from state.db import Database

Clock = Callable[[], float]


@dataclass(frozen=True)
class TenantRow:
    name: str
    directory_id: str
    application_id: str
    auth_state: str
    auth_owner: str | None
    has_token_cache: bool
    auth_reason: str | None = None
    auth_changed_at: float | None = None  # when the authorization state last changed (e.g. re-authorized)
    auth_scopes: str | None = None  # delegated: the scopes asked at the owner's last sign-in (None: unknown)


@dataclass(frozen=True)
class Attempt:
    id: str
    tenant: str
    purpose: str
    data: bytes | None


@dataclass(frozen=True)
class RunRow:
    id: str
    tenant: str
    trigger: str
    started_at: float
    finished_at: float | None
    result: str | None
    summary: dict[str, Any]
    error: str | None


class Store:
    """Typed queries over one :class:`Database`."""

    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.db = db
        self.clock = clock

    # --- tenants ---

    async def register_tenant(self, name: str, directory_id: str, application_id: str) -> bool:
        """Record a configured tenant; returns True when its app identity changed.

        A different directory or application ID makes the stored tokens useless,
        so they are dropped and the tenant needs authorization again; mappings
        and extension numbers are kept.
        """
        async with self.db.transaction() as conn:
            # Insert first: daemons of a shared state starting together must not both insert.
            if await conn.execute(
                "INSERT INTO tenants (name, directory_id, application_id, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, directory_id, application_id, self.clock()),
            ):
                return False
            row = await conn.fetchone("SELECT directory_id, application_id FROM tenants WHERE name = ?", (name,))
            assert row is not None
            if (row[0], row[1]) == (directory_id, application_id):
                return False
            await conn.execute(
                "UPDATE tenants SET directory_id = ?, application_id = ?,"
                " auth_state = 'authorization_required', auth_owner = NULL,"
                " auth_changed_at = ? WHERE name = ?",
                (directory_id, application_id, self.clock(), name),
            )
            await conn.execute("DELETE FROM token_cache WHERE tenant = ?", (name,))
            return True

    async def tenants(self) -> list[TenantRow]:
        rows = await self.db.fetchall(f"{TENANT_ROWS} ORDER BY t.name")
        return [_tenant_row(r) for r in rows]

    async def tenant(self, name: str) -> TenantRow | None:
        """One tenant by its primary key (runs ask this; a daemon of 500 tenants must not list them all)."""
        row = await self.db.fetchone(f"{TENANT_ROWS} WHERE t.name = ?", (name,))
        return None if row is None else _tenant_row(row)

    async def set_auth_state(
        self, tenant: str, state: str, owner: str | None = None, reason: str | None = None
    ) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE tenants SET auth_state = ?, auth_owner = COALESCE(?, auth_owner),"
                " auth_reason = ?, auth_changed_at = ? WHERE name = ?",
                (state, owner, short_reason(reason), self.clock(), tenant),
            )

    async def set_auth_scopes(self, tenant: str, scopes: list[str]) -> None:
        """The scopes the owner consented to at this sign-in (delegated mode)."""
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE tenants SET auth_scopes = ? WHERE name = ?", (" ".join(scopes), tenant))

    async def forget_tenant(self, tenant: str) -> None:
        """Everything kept for a tenant goes (every table refers to it ON DELETE CASCADE)."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM tenants WHERE name = ?", (tenant,))

    async def drop_token_cache(self, tenant: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM token_cache WHERE tenant = ?", (tenant,))

    # --- authorization attempts and the signing key ---

    async def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The daemon secret called ``name``, created with ``make()`` on first use."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO daemon_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, make()),
            )
            row = await conn.fetchone("SELECT value FROM daemon_secrets WHERE name = ?", (name,))
        assert row is not None
        return bytes(row[0])

    async def create_attempt(
        self, attempt_id: str, tenant: str, purpose: str, lifetime: float, data: bytes | None = None
    ) -> None:
        now = self.clock()
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM auth_attempts WHERE expires_at < ?", (now - 86400,))
            await conn.execute(
                "INSERT INTO auth_attempts (id, tenant, purpose, created_at, expires_at, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (attempt_id, tenant, purpose, now, now + lifetime, data),
            )

    async def consume_attempt(self, attempt_id: str, purpose: str) -> Attempt | None:
        """Mark an unexpired, unused attempt used and return it; None otherwise (single use)."""
        now = self.clock()
        async with self.db.transaction() as conn:
            consumed = await conn.execute(
                "UPDATE auth_attempts SET used_at = ? WHERE id = ? AND purpose = ?"
                " AND used_at IS NULL AND expires_at > ?",
                (now, attempt_id, purpose, now),
            )
            if consumed != 1:
                return None
            row = await conn.fetchone("SELECT id, tenant, purpose, data FROM auth_attempts WHERE id = ?", (attempt_id,))
        assert row is not None
        return Attempt(row[0], row[1], row[2], None if row[3] is None else bytes(row[3]))

    # --- token cache ---

    async def load_token_cache(self, tenant: str) -> bytes | None:
        row = await self.db.fetchone("SELECT cache FROM token_cache WHERE tenant = ?", (tenant,))
        return None if row is None else bytes(row[0])

    async def save_token_cache(self, tenant: str, cache: bytes) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO token_cache (tenant, cache, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant) DO UPDATE SET cache = excluded.cache,"
                " updated_at = excluded.updated_at",
                (tenant, cache, self.clock()),
            )

    # --- delta links ---

    async def delta_link(self, tenant: str, resource: str, key: str = "") -> str | None:
        row = await self.db.fetchone(
            "SELECT link FROM delta_links WHERE tenant = ? AND resource = ? AND key = ?", (tenant, resource, key)
        )
        return None if row is None else str(row[0])

    async def save_delta_link(self, tenant: str, resource: str, link: str, key: str = "") -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO delta_links (tenant, resource, key, link, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, resource, key)"
                " DO UPDATE SET link = excluded.link, updated_at = excluded.updated_at",
                (tenant, resource, key, link, self.clock()),
            )

    async def delta_links(self, tenant: str, resource: str) -> dict[str, str]:
        """Every key's link of a resource (per-mailbox resources), in one query."""
        return {
            row[0]: row[1]
            for row in await self.db.fetchall(
                "SELECT key, link FROM delta_links WHERE tenant = ? AND resource = ?", (tenant, resource)
            )
        }

    async def save_delta_links(self, tenant: str, resource: str, links: dict[str, str]) -> None:
        """Commit many keys' links in one transaction."""
        async with self.db.transaction() as conn:
            await write_delta_links(conn, tenant, resource, links, self.clock())

    async def drop_delta_links(
        self, tenant: str, resource: str, keep: list[str] | None = None, keys: list[str] | None = None
    ) -> None:
        """Drop a resource's links: all, all but ``keep``, or only ``keys``."""
        async with self.db.transaction() as conn:
            if keys is not None:
                await conn.executemany(
                    "DELETE FROM delta_links WHERE tenant = ? AND resource = ? AND key = ?",
                    [(tenant, resource, k) for k in keys],
                )
                return
            kept = keep or []
            marks = ",".join("?" * len(kept))
            await conn.execute(
                f"DELETE FROM delta_links WHERE tenant = ? AND resource = ?{f' AND key NOT IN ({marks})' if kept else ''}",
                (tenant, resource, *kept),
            )

    async def drop_delta_link(self, tenant: str, resource: str, key: str = "") -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM delta_links WHERE tenant = ? AND resource = ? AND key = ?",
                (tenant, resource, key),
            )

    # --- runs ---

    async def start_run(self, run_id: str, tenant: str, trigger: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO runs (id, tenant, trigger, started_at) VALUES (?, ?, ?, ?)",
                (run_id, tenant, trigger, self.clock()),
            )

    async def finish_run(
        self,
        run_id: str,
        result: str,
        summary: dict[str, Any],
        error: str | None = None,
    ) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE runs SET finished_at = ?, result = ?, summary = ?, error = ? WHERE id = ?",
                (self.clock(), result, json.dumps(redact_value(summary, limit=REASON_LIMIT), sort_keys=True), short_reason(error), run_id),
            )

    async def forget_run(self, run_id: str) -> None:
        """Drop a run's record: a users poll (every minute) that changed nothing is no history."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    async def close_abandoned_runs(self, tenant: str, reason: str) -> int:
        """Close the tenant's runs left ``running`` as ``interrupted`` (with the reason);
        called by the holder of the tenant's run lock, so none of them can still be running."""
        async with self.db.transaction() as conn:
            rows = await conn.fetchall("SELECT id FROM runs WHERE tenant = ? AND finished_at IS NULL", (tenant,))
            for (run_id,) in rows:
                await conn.execute("UPDATE runs SET finished_at = ?, result = ?, error = ? WHERE id = ?",
                                   (self.clock(), "interrupted", reason, run_id))
        return len(rows)

    async def run(self, run_id: str) -> RunRow | None:
        row = await self.db.fetchone(
            "SELECT id, tenant, trigger, started_at, finished_at, result, summary, error FROM runs WHERE id = ?",
            (run_id,),
        )
        return None if row is None else _run_row(row)

    async def last_run(self, tenant: str) -> RunRow | None:
        row = await self.db.fetchone(
            "SELECT id, tenant, trigger, started_at, finished_at, result, summary, error"
            f" FROM runs WHERE tenant = ? ORDER BY started_at DESC, {self.db.insertion_order} DESC LIMIT 1",
            (tenant,),
        )
        return None if row is None else _run_row(row)

    async def recent_runs(self, tenant: str, limit: int = 10, result: str | None = None) -> list[RunRow]:
        """The tenant's last ``limit`` runs, newest first (only those that ended in ``result``, if given):
        the status page's run history and its last success."""
        only = " AND result = ?" if result is not None else ""
        rows = await self.db.fetchall(
            "SELECT id, tenant, trigger, started_at, finished_at, result, summary, error"
            f" FROM runs WHERE tenant = ?{only} ORDER BY started_at DESC, {self.db.insertion_order} DESC LIMIT ?",
            (tenant, *((result,) if result is not None else ()), limit),
        )
        return [_run_row(row) for row in rows]


TENANT_ROWS = (
    "SELECT t.name, t.directory_id, t.application_id, t.auth_state, t.auth_owner,"
    " c.tenant IS NOT NULL, t.auth_reason, t.auth_changed_at, t.auth_scopes FROM tenants t"
    " LEFT JOIN token_cache c ON c.tenant = t.name"
)


async def write_delta_links(conn: Any, tenant: str, resource: str, links: Mapping[str, str], now: float) -> None:
    """Inside the caller's transaction: a resource's deltaLinks, by key."""
    await conn.executemany(
        "INSERT INTO delta_links (tenant, resource, key, link, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, resource, key) DO UPDATE SET link = excluded.link, updated_at = excluded.updated_at",
        [(tenant, resource, key, link, now) for key, link in links.items()],
    )


def _tenant_row(r: Any) -> TenantRow:
    return TenantRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8])


def _run_row(row: Any) -> RunRow:
    return RunRow(
        id=row[0],
        tenant=row[1],
        trigger=row[2],
        started_at=row[3],
        finished_at=row[4],
        result=row[5],
        summary=json.loads(row[6]) if row[6] else {},
        error=row[7],
    )
