"""What the polls push of each user, besides the user itself: the busy list's
fingerprint (calendar) and the Teams presence, recorded in the applier's
transaction with the rest of a chunk's bookkeeping (``state.pushed``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BusyPushed:
    user_id: str
    fingerprint: str
    pbx_id: str | None = None  # set when the write found the user under another id than the one recorded


@dataclass(frozen=True)
class PresencePushed:
    """The presence now on the PBX for a user; ``None``: removed from it."""

    user_id: str
    presence: tuple[str, str] | None  # (availability, activity)


async def record_busy(conn: Any, tenant: str, entries: list[BusyPushed]) -> None:
    await conn.executemany(
        "INSERT INTO calendar_state (tenant, user_id, busy_fingerprint) VALUES (?, ?, ?)"
        " ON CONFLICT (tenant, user_id) DO UPDATE SET busy_fingerprint = excluded.busy_fingerprint",
        [(tenant, e.user_id, e.fingerprint) for e in entries],
    )
    if moved := [(e.pbx_id, tenant, e.user_id) for e in entries if e.pbx_id is not None]:
        await conn.executemany("UPDATE synced_objects SET pbx_id = ? WHERE tenant = ? AND kind = 'user' AND graph_id = ?",
                               moved)


async def record_presence(conn: Any, tenant: str, entries: list[PresencePushed]) -> None:
    await conn.executemany(
        "INSERT INTO presence_state (tenant, user_id, availability, activity) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (tenant, user_id) DO UPDATE SET availability = excluded.availability,"
        " activity = excluded.activity",
        [(tenant, e.user_id, *e.presence) for e in entries if e.presence is not None],
    )
    await conn.executemany(
        "DELETE FROM presence_state WHERE tenant = ? AND user_id = ?",
        [(tenant, e.user_id) for e in entries if e.presence is None],
    )
