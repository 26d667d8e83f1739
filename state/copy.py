"""``m365sync state copy``: move an installation between backends, row for
row, so nobody is renumbered and nothing is synced again.

Both databases are migrated to this version's schema first; the target must
hold no tenant yet (a copy never merges). Every table is copied whole, in
the order its foreign keys need, in one transaction on the target: a copy
that fails leaves the target as empty as it was. Runs are copied in the
order they were recorded, so "the last run" stays the same. Run locks
(``run_leases``) belong to the processes that took them and are not copied.

A dry run against a shared PostgreSQL state uses the same copy, into a
scratch SQLite file.
"""

from __future__ import annotations

from pathlib import Path

from daemon.errors import StateError
from state.db import Database
from state.open import open_database

BATCH = 500

# The schema's tables and columns, parents before children (checked against
# both backends' schemas by tests/test_state_backends.py).
TABLES: dict[str, tuple[str, ...]] = {
    "tenants": ("name", "directory_id", "application_id", "created_at", "auth_state", "auth_owner",
                "auth_changed_at", "auth_reason", "auth_scopes"),
    "daemon_secrets": ("name", "value"),
    "delta_links": ("tenant", "resource", "key", "link", "updated_at"),
    "synced_objects": ("tenant", "kind", "graph_id", "pbx_id", "payload_hash", "etag", "updated_at", "payload",
                       "active", "out_of_scope_since", "photo_etag", "last_push_at", "failures", "last_error",
                       "quarantine_fingerprint", "input_hash", "retry_at", "failed_fingerprint"),
    "extension_allocations": ("tenant", "number", "owner_kind", "owner_graph_id", "allocated_at", "released_at"),
    "runs": ("id", "tenant", "trigger", "started_at", "finished_at", "result", "summary", "error"),
    "token_cache": ("tenant", "cache", "updated_at"),
    "auth_attempts": ("id", "tenant", "purpose", "created_at", "expires_at", "used_at", "data"),
    "graph_objects": ("tenant", "kind", "id", "data", "removed", "updated_at", "owner", "folder", "dirty"),
    "group_members": ("tenant", "group_id", "member_id"),
    "held_deprovisions": ("tenant", "graph_id", "action", "held_at", "approved", "kind"),
    "tenant_sync_state": ("tenant", "name", "value"),
    "unreadable_mailboxes": ("tenant", "user_id", "resource", "since"),
    "contact_folders": ("tenant", "user_id", "folder_id"),
    "calendar_state": ("tenant", "user_id", "window_day", "busy_fingerprint"),
    "presence_state": ("tenant", "user_id", "availability", "activity"),
    "pending_creates": ("tenant", "kind", "graph_id", "since"),
    "photo_checks": ("tenant", "user_id", "checked_at", "due_at"),
    "folder_listings": ("tenant", "user_id", "listed_at", "started_at", "relist"),
    "notify_subscriptions": ("tenant", "id", "kind", "resource", "mailbox", "expires_at", "client_state", "state",
                             "reason"),
    "notify_due": ("tenant", "kind", "mailbox", "since"),
    "notify_tenants": ("tenant", "handshake_ok", "handshake_at", "handshake_reason", "last_notified_at"),
    "object_history": ("tenant", "kind", "graph_id", "at", "run_id", "action", "attributes", "changed_values", "reason"),
}
NOT_COPIED = frozenset({"run_leases", "instances"})  # a process's own run locks; the daemons of a shared state
# Columns a backend has for itself: PostgreSQL's insertion order of runs (SQLite's rowid).
OWN_COLUMNS = {"runs": frozenset({"seq"})}


async def copy_state(source: Database, target: Database) -> dict[str, int]:
    """Copy every row; returns the number of rows per table."""
    if await target.fetchone("SELECT 1 FROM tenants LIMIT 1") is not None:
        raise StateError(f"the target state database {target.location} already holds tenants",
                         hint="copy into a new, empty database (a copy never merges)")
    counts: dict[str, int] = {}
    async with target.transaction() as tx:
        for table, columns in TABLES.items():
            order = f" ORDER BY {source.insertion_order}" if table == "runs" else ""
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            batch: list[tuple[object, ...]] = []
            counts[table] = 0
            async for row in source.stream(f"SELECT {', '.join(columns)} FROM {table}{order}"):
                batch.append(tuple(row))
                if len(batch) == BATCH:
                    await tx.executemany(insert, batch)
                    counts[table] += len(batch)
                    batch = []
            if batch:
                await tx.executemany(insert, batch)
                counts[table] += len(batch)
    return counts


async def copy_database(source: Path | str, target: Path | str, *, password_file: Path | None = None) -> dict[str, int]:
    """Open both (migrating each to this version), copy, close. ``password_file``
    is the PostgreSQL side's (whichever side that is)."""
    source_db = await open_database(source, password_file=password_file)
    try:
        target_db = await open_database(target, password_file=password_file)
        try:
            return await copy_state(source_db, target_db)
        finally:
            await target_db.close()
    finally:
        await source_db.close()
