"""When each mailbox's contact folders were listed (``folder_listings``,
migration 0014), for the folder cadence of ``daemon.sync.folder_schedule``.

A listing is begun (:meth:`begin_listings`: it takes the requests for a
listing made so far) and, when it read every folder, completed
(:meth:`complete_listings`). One begun and never completed (the process
died, or the listing was incomplete) leaves its mark, and a request made
while it ran (:meth:`request_listings`) stays, so neither is lost: the
mailbox is listed again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from state.db import Database


@dataclass(frozen=True)
class Listing:
    listed_at: float | None  # when the last complete listing began; None: never completed
    pending: bool  # asked for, or begun and not completed: list at the next chance


class FolderListingQueries:
    db: Database

    async def folder_listings(self, tenant: str) -> dict[str, Listing]:
        return {
            str(user_id): Listing(None if listed_at is None else float(listed_at), bool(relist) or started is not None)
            for user_id, listed_at, started, relist in await self.db.fetchall(
                "SELECT user_id, listed_at, started_at, relist FROM folder_listings WHERE tenant = ?", (tenant,))
        }

    async def begin_listings(self, tenant: str, user_ids: Iterable[str], now: float) -> None:
        """These mailboxes' listings start now; the requests made so far are theirs."""
        await self._each("INSERT INTO folder_listings (tenant, user_id, started_at) VALUES (?, ?, ?) ON CONFLICT"
                         " (tenant, user_id) DO UPDATE SET started_at = excluded.started_at, relist = 0",
                         [(tenant, u, now) for u in dict.fromkeys(user_ids)])

    async def complete_listings(self, tenant: str, user_ids: Iterable[str]) -> None:
        """These mailboxes' listings read every folder: listed as of when they began."""
        await self._each("UPDATE folder_listings SET listed_at = started_at, started_at = NULL"
                         " WHERE tenant = ? AND user_id = ? AND started_at IS NOT NULL",
                         [(tenant, u) for u in dict.fromkeys(user_ids)])

    async def request_listings(self, tenant: str, user_ids: Iterable[str]) -> None:
        """List these mailboxes at the next chance (kept through a listing already under way)."""
        await self._each("INSERT INTO folder_listings (tenant, user_id, relist) VALUES (?, ?, 1)"
                         " ON CONFLICT (tenant, user_id) DO UPDATE SET relist = 1",
                         [(tenant, u) for u in dict.fromkeys(user_ids)])

    async def _each(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        """One statement for each row, in one transaction."""
        async with self.db.transaction() as conn:
            await conn.executemany(sql, rows)
