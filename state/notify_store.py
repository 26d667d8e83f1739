"""What change notifications keep in the state: each tenant's Graph
subscriptions (their ``clientState`` sealed like the tokens), the reads
notifications asked for and no daemon has done yet, whether Graph could
reach the public address, and when the last notification came.

Typed tables (``notify_subscriptions``, ``notify_due``, ``notify_tenants``,
migration 0014), shared by every daemon of a shared state, so any daemon can
persist a notification and the tenant's owner reads it; a due read is one
row per kind and mailbox, so a burst of notifications for one mailbox is one
row.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from state.db import Database
from state.store import Clock

ACTIVE, REAUTHORIZE, REMOVED = "active", "reauthorize", "removed"
_COLUMNS = "id, kind, resource, mailbox, expires_at, client_state, state, reason"
# The endpoint's lookup (the primary key), and a keeper round's one read: every subscription of the tenant
# without its sealed clientState, in expiry order (notify_subscriptions_expiry), so the renewals come first.
SUBSCRIPTION_BY_ID = f"SELECT {_COLUMNS} FROM notify_subscriptions WHERE tenant = ? AND id = ?"
HANDSHAKE = "SELECT handshake_ok, handshake_at, handshake_reason FROM notify_tenants WHERE tenant = ?"
KEEPER_ROUND = ("SELECT id, kind, resource, state, expires_at FROM notify_subscriptions WHERE tenant = ?"
                " ORDER BY expires_at")


@dataclass(frozen=True)
class Due:
    kind: str
    mailbox: str | None
    at: float


@dataclass(frozen=True)
class StoredSubscription:
    id: str
    kind: str  # user | group | contact | busy
    resource: str
    mailbox: str | None
    expires_at: float
    sealed_state: bytes  # the clientState, sealed
    state: str = ACTIVE
    reason: str | None = None  # why it left ACTIVE (a lifecycle event), when it did

    def row(self, tenant: str) -> tuple[Any, ...]:
        return (tenant, self.id, self.kind, self.resource, self.mailbox, self.expires_at,
                base64.b64encode(self.sealed_state).decode(), self.state, self.reason)

    @classmethod
    def from_row(cls, row: Any) -> StoredSubscription:
        id_, kind, resource, mailbox, expires_at, client_state, state, reason = row
        return cls(str(id_), str(kind), str(resource), mailbox, float(expires_at), base64.b64decode(client_state),
                   str(state), reason)


@dataclass(frozen=True)
class KeptSubscription:
    """What a keeper round needs of a stored subscription: not its sealed clientState (only the
    endpoint opens that), so a round of 20k subscriptions reads no secrets."""

    id: str
    kind: str
    resource: str
    state: str
    expires_at: float


@dataclass(frozen=True)
class Handshake:
    ok: bool
    at: float
    reason: str | None


class NotifyStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # --- reads asked for by notifications ---

    async def mark_due(self, tenant: str, marks: Iterable[tuple[str, str | None]], at: float) -> None:
        """Persist "read kind K (of mailbox M)"; a mark already there keeps its earlier time."""
        rows = sorted({(tenant, kind, mailbox or "", at) for kind, mailbox in marks})
        async with self.db.transaction() as conn:
            await conn.executemany("INSERT INTO notify_due (tenant, kind, mailbox, since) VALUES (?, ?, ?, ?)"
                                   " ON CONFLICT (tenant, kind, mailbox) DO NOTHING", rows)
            await conn.execute("INSERT INTO notify_tenants (tenant, last_notified_at) VALUES (?, ?)"
                               " ON CONFLICT (tenant) DO UPDATE SET last_notified_at = excluded.last_notified_at",
                               (tenant, at))

    async def take_due(self, tenant: str) -> list[Due]:
        """The due reads, removed in the same transaction (the one daemon that reads takes them)."""
        async with self.db.transaction() as conn:
            rows = await conn.fetchall("SELECT kind, mailbox, since FROM notify_due WHERE tenant = ?"
                                       " ORDER BY kind, mailbox", (tenant,))
            await conn.execute("DELETE FROM notify_due WHERE tenant = ?", (tenant,))
        return [Due(str(kind), mailbox or None, float(since)) for kind, mailbox, since in rows]

    async def last_notification(self, tenant: str) -> float | None:
        row = await self.db.fetchone("SELECT last_notified_at FROM notify_tenants WHERE tenant = ?", (tenant,))
        return None if row is None or row[0] is None else float(row[0])

    # --- subscriptions ---

    async def subscriptions(self, tenant: str) -> list[StoredSubscription]:
        rows = await self.db.fetchall(f"SELECT {_COLUMNS} FROM notify_subscriptions WHERE tenant = ? ORDER BY id",
                                      (tenant,))
        return [StoredSubscription.from_row(row) for row in rows]

    async def has_subscriptions(self, tenant: str) -> bool:
        return await self.db.fetchone("SELECT 1 FROM notify_subscriptions WHERE tenant = ? LIMIT 1",
                                      (tenant,)) is not None

    async def kept(self, tenant: str) -> list[KeptSubscription]:
        """A keeper round's one read of the tenant's subscriptions, the first to expire first."""
        rows = await self.db.fetchall(KEEPER_ROUND, (tenant,))
        return [KeptSubscription(str(id_), str(kind), str(resource), str(state), float(expires_at))
                for id_, kind, resource, state, expires_at in rows]

    async def renewed(self, tenant: str, subscription_id: str, expires_at: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE notify_subscriptions SET expires_at = ? WHERE tenant = ? AND id = ?",
                               (expires_at, tenant, subscription_id))

    async def reactivated(self, tenant: str, subscription_id: str) -> None:
        """Reauthorized: active again (the lifecycle event's reason stays, as the last one)."""
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE notify_subscriptions SET state = ? WHERE tenant = ? AND id = ?",
                               (ACTIVE, tenant, subscription_id))

    async def subscription(self, tenant: str, subscription_id: str) -> StoredSubscription | None:
        row = await self.db.fetchone(SUBSCRIPTION_BY_ID, (tenant, subscription_id))
        return None if row is None else StoredSubscription.from_row(row)

    async def put_subscription(self, tenant: str, subscription: StoredSubscription) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO notify_subscriptions (tenant, id, kind, resource, mailbox, expires_at, client_state,"
                " state, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, id) DO UPDATE SET"
                " kind = excluded.kind, resource = excluded.resource, mailbox = excluded.mailbox,"
                " expires_at = excluded.expires_at, client_state = excluded.client_state, state = excluded.state,"
                " reason = excluded.reason", subscription.row(tenant))

    async def drop_subscription(self, tenant: str, subscription_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM notify_subscriptions WHERE tenant = ? AND id = ?", (tenant, subscription_id))

    async def subscribed_tenants(self) -> list[str]:
        """Every tenant with a stored subscription (a configured one or not)."""
        rows = await self.db.fetchall("SELECT DISTINCT tenant FROM notify_subscriptions ORDER BY tenant")
        return [str(row[0]) for row in rows]

    async def forget_notifications(self, tenant: str) -> list[StoredSubscription]:
        """Drop everything notifications kept of a tenant; returns its subscriptions as they were."""
        async with self.db.transaction() as conn:
            rows = await conn.fetchall(f"SELECT {_COLUMNS} FROM notify_subscriptions WHERE tenant = ? ORDER BY id",
                                       (tenant,))
            for table in ("notify_subscriptions", "notify_due", "notify_tenants"):
                await conn.execute(f"DELETE FROM {table} WHERE tenant = ?", (tenant,))  # noqa: S608 (fixed names)
        return [StoredSubscription.from_row(row) for row in rows]

    # --- whether Graph reaches the public address ---

    async def set_handshake(self, tenant: str, ok: bool, reason: str | None = None) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO notify_tenants (tenant, handshake_ok, handshake_at, handshake_reason) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant) DO UPDATE SET handshake_ok = excluded.handshake_ok,"
                " handshake_at = excluded.handshake_at, handshake_reason = excluded.handshake_reason",
                (tenant, int(ok), self.clock(), reason))

    async def handshake(self, tenant: str) -> Handshake | None:
        row = await self.db.fetchone(HANDSHAKE, (tenant,))
        if row is None or row[0] is None:
            return None
        return Handshake(bool(row[0]), float(row[1] or 0.0), row[2])
