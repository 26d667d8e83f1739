"""Typed per-mailbox and per-tenant sync state: unreadable mailboxes, contact
folders, calendar windows and busy fingerprints, and the run lease."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from state.db import Database
from state.store import Clock

DAY = 86400.0


class MarkerQueries:
    db: Database
    clock: Clock

    # --- mailboxes that answered 403 ---

    async def mark_unreadable(self, tenant: str, user_id: str, resource: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO unreadable_mailboxes (tenant, user_id, resource, since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant, user_id, resource) DO UPDATE SET since = excluded.since",
                (tenant, user_id, resource, self.clock()),
            )

    async def clear_unreadable(self, tenant: str, user_ids: Iterable[str], resource: str) -> None:
        """These mailboxes answered: forget that they once did not (writes only for those marked)."""
        marked = set(await self.unreadable(tenant, resource)) & set(user_ids)
        if not marked:
            return
        async with self.db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM unreadable_mailboxes WHERE tenant = ? AND user_id = ? AND resource = ?",
                [(tenant, u, resource) for u in marked],
            )

    async def skipped_unreadable(self, tenant: str, resource: str, authorized_at: float | None) -> set[str]:
        """Mailboxes not to ask this time: they answered 403 since the last
        authorization and less than a day ago (then they are asked again)."""
        since = max(authorized_at or 0.0, self.clock() - DAY)
        return {
            row[0]
            for row in await self.db.fetchall(
                "SELECT user_id FROM unreadable_mailboxes WHERE tenant = ? AND resource = ? AND since > ?",
                (tenant, resource, since),
            )
        }

    async def unreadable(self, tenant: str, resource: str) -> list[str]:
        return [
            row[0]
            for row in await self.db.fetchall(
                "SELECT user_id FROM unreadable_mailboxes WHERE tenant = ? AND resource = ? ORDER BY user_id",
                (tenant, resource),
            )
        ]

    # --- contact folders ---

    async def folders(self, tenant: str) -> dict[str, list[str]]:
        """Every mailbox's known contact folders."""
        out: dict[str, list[str]] = {}
        async for user_id, folder_id in self.db.stream(
            "SELECT user_id, folder_id FROM contact_folders WHERE tenant = ? ORDER BY user_id, folder_id", (tenant,)
        ):
            out.setdefault(user_id, []).append(folder_id)
        return out

    async def set_folders(self, tenant: str, folders: dict[str, list[str]]) -> None:
        """Replace the folder lists of these mailboxes (one transaction)."""
        async with self.db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM contact_folders WHERE tenant = ? AND user_id = ?", [(tenant, u) for u in folders]
            )
            await conn.executemany(
                "INSERT INTO contact_folders (tenant, user_id, folder_id) VALUES (?, ?, ?)",
                [(tenant, u, f) for u, ids in folders.items() for f in dict.fromkeys(ids)],
            )

    # --- calendars ---

    async def calendar_states(self, tenant: str) -> dict[str, tuple[str | None, str | None]]:
        """user id -> (window day, busy fingerprint)."""
        return {
            row[0]: (row[1], row[2])
            for row in await self.db.fetchall(
                "SELECT user_id, window_day, busy_fingerprint FROM calendar_state WHERE tenant = ?", (tenant,)
            )
        }

    async def set_window_days(self, tenant: str, user_ids: Iterable[str], day: str) -> None:
        async with self.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO calendar_state (tenant, user_id, window_day) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant, user_id) DO UPDATE SET window_day = excluded.window_day",
                [(tenant, u, day) for u in user_ids],
            )

    # --- Teams presence ---

    async def presence_states(self, tenant: str) -> dict[str, tuple[str, str]]:
        """user id -> the (availability, activity) last pushed to the PBX."""
        return {
            row[0]: (row[1], row[2])
            for row in await self.db.fetchall(
                "SELECT user_id, availability, activity FROM presence_state WHERE tenant = ?", (tenant,)
            )
        }

    # --- photo checks ---

    async def photo_checks(self, tenant: str) -> dict[str, float]:
        """user id -> when its photo metadata was last checked."""
        return {
            row[0]: float(row[1])
            for row in await self.db.fetchall(
                "SELECT user_id, checked_at FROM photo_checks WHERE tenant = ?", (tenant,)
            )
        }

    async def set_photo_checks(self, tenant: str, due: Mapping[str, float]) -> None:
        """Users checked now, each with when its next check is due (found by ``photo_checks_due``)."""
        async with self.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO photo_checks (tenant, user_id, checked_at, due_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant, user_id) DO UPDATE SET checked_at = excluded.checked_at, due_at = excluded.due_at",
                [(tenant, u, self.clock(), due_at) for u, due_at in due.items()],
            )

    # --- the run lease ---

    async def try_lock(self, tenant: str, owner: str, lease_seconds: float, alive: Callable[[str], bool]) -> str | None:
        """Take the tenant's run lease; returns the current holder when someone else has it."""
        now = self.clock()
        async with self.db.transaction() as conn:
            row = await conn.fetchone("SELECT holder, expires_at FROM run_leases WHERE tenant = ?", (tenant,))
            if row is not None and row[0] != owner and float(row[1]) > now and alive(str(row[0])):
                return str(row[0])
            await conn.execute(
                "INSERT INTO run_leases (tenant, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
                (tenant, owner, now + lease_seconds),
            )
        return None

    async def unlock(self, tenant: str, owner: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM run_leases WHERE tenant = ? AND holder = ?", (tenant, owner))

    # --- other per-tenant values (the next scheduled run, the last inventory read, the groups mode) ---
    # One key/value table; callers use the typed accessors, so none parses a string.

    async def timestamp(self, tenant: str, name: str) -> float | None:
        """A moment stored with :meth:`set_timestamp`; None when never set (or not a number)."""
        stored = await self.value(tenant, name)
        try:
            return float(stored) if stored else None
        except ValueError:
            return None

    async def set_timestamp(self, tenant: str, name: str, when: float) -> None:
        await self.set_value(tenant, name, repr(when))

    async def value(self, tenant: str, name: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT value FROM tenant_sync_state WHERE tenant = ? AND name = ?", (tenant, name)
        )
        return None if row is None else str(row[0])

    async def set_value(self, tenant: str, name: str, value: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                (tenant, name, value),
            )
