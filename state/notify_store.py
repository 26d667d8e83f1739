"""What change notifications keep in the state: each tenant's Graph
subscriptions (their ``clientState`` sealed like the tokens), the reads
notifications asked for and no daemon has done yet, whether Graph could
reach the public address, and when the last notification came.

It lives in the shared per-tenant key/value table (``tenant_sync_state``),
under ``notify:`` names, so any daemon of a shared state can persist a
notification and the tenant's owner reads it; the due reads are keyed by
kind and mailbox, so a burst of notifications for one mailbox is one row.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass

from state.db import Database
from state.store import Clock

DUE = "notify:due:"  # + kind + ":" + mailbox ("" for the whole tenant) -> when first asked for
SUBSCRIPTION = "notify:sub:"  # + Graph's subscription id -> JSON
HANDSHAKE = "notify:handshake"  # JSON {ok, at, reason}: the last attempt to create a subscription
LAST = "notify:last"  # when the last accepted notification arrived
ACTIVE, REAUTHORIZE, REMOVED = "active", "reauthorize", "removed"


def _range(prefix: str) -> tuple[str, str]:
    """Names starting with ``prefix`` as a key range (uses the primary key on both backends)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


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

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "resource": self.resource, "mailbox": self.mailbox,
                           "expires_at": self.expires_at, "state": self.state,
                           "secret": base64.b64encode(self.sealed_state).decode()})

    @classmethod
    def from_json(cls, id_: str, text: str) -> StoredSubscription:
        data = json.loads(text)
        return cls(id_, str(data["kind"]), str(data["resource"]), data.get("mailbox"), float(data["expires_at"]),
                   base64.b64decode(data["secret"]), str(data.get("state", ACTIVE)))


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
        rows = {(tenant, f"{DUE}{kind}:{mailbox or ''}", repr(at)) for kind, mailbox in marks}
        async with self.db.transaction() as conn:
            await conn.executemany("INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)"
                                   " ON CONFLICT (tenant, name) DO NOTHING", sorted(rows))
            await conn.execute("INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)"
                               " ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                               (tenant, LAST, repr(at)))

    async def take_due(self, tenant: str) -> list[Due]:
        """The due reads, removed in the same transaction (the one daemon that reads takes them)."""
        low, high = _range(DUE)
        async with self.db.transaction() as conn:
            rows = await conn.fetchall("SELECT name, value FROM tenant_sync_state WHERE tenant = ? AND name >= ?"
                                       " AND name < ?", (tenant, low, high))
            await conn.execute("DELETE FROM tenant_sync_state WHERE tenant = ? AND name >= ? AND name < ?",
                               (tenant, low, high))
        due = []
        for name, value in rows:
            kind, _, mailbox = str(name)[len(DUE):].partition(":")
            due.append(Due(kind, mailbox or None, float(value)))
        return due

    async def last_notification(self, tenant: str) -> float | None:
        row = await self.db.fetchone("SELECT value FROM tenant_sync_state WHERE tenant = ? AND name = ?",
                                     (tenant, LAST))
        return None if row is None else float(row[0])

    # --- subscriptions ---

    async def subscriptions(self, tenant: str) -> list[StoredSubscription]:
        low, high = _range(SUBSCRIPTION)
        rows = await self.db.fetchall("SELECT name, value FROM tenant_sync_state WHERE tenant = ? AND name >= ?"
                                      " AND name < ?", (tenant, low, high))
        return [StoredSubscription.from_json(str(name)[len(SUBSCRIPTION):], str(value)) for name, value in rows]

    async def subscription(self, tenant: str, subscription_id: str) -> StoredSubscription | None:
        row = await self.db.fetchone("SELECT value FROM tenant_sync_state WHERE tenant = ? AND name = ?",
                                     (tenant, SUBSCRIPTION + subscription_id))
        return None if row is None else StoredSubscription.from_json(subscription_id, str(row[0]))

    async def put_subscription(self, tenant: str, subscription: StoredSubscription) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)"
                               " ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                               (tenant, SUBSCRIPTION + subscription.id, subscription.to_json()))

    async def drop_subscription(self, tenant: str, subscription_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM tenant_sync_state WHERE tenant = ? AND name = ?",
                               (tenant, SUBSCRIPTION + subscription_id))

    # --- whether Graph reaches the public address ---

    async def set_handshake(self, tenant: str, ok: bool, reason: str | None = None) -> None:
        value = json.dumps({"ok": ok, "at": self.clock(), "reason": reason})
        async with self.db.transaction() as conn:
            await conn.execute("INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)"
                               " ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                               (tenant, HANDSHAKE, value))

    async def handshake(self, tenant: str) -> Handshake | None:
        row = await self.db.fetchone("SELECT value FROM tenant_sync_state WHERE tenant = ? AND name = ?",
                                     (tenant, HANDSHAKE))
        if row is None:
            return None
        data = json.loads(str(row[0]))
        return Handshake(bool(data.get("ok")), float(data.get("at", 0.0)), data.get("reason"))
