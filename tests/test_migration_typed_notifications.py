"""Version 14 carries what older databases kept in borrowed key/value rows
over into its typed tables, on both backends: the change-notification rows
of ``tenant_sync_state`` (subscriptions as JSON, due marks, the handshake,
the last notification) and the folder listings kept as ``delta_links``
rows, written here exactly as the code before it wrote them; the new
stores read them back, and the old rows are gone."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from state.listings import Listing
from state.notify_store import Due, Handshake, NotifyStore, StoredSubscription
from state.open import open_database
from state.schema import Dialect, bundled_migrations
from state.sync_store import SyncStore

SUBSCRIPTION = {"kind": "contact", "resource": "users/u1/contacts", "mailbox": "u1", "expires_at": 1234.5,
                "state": "reauthorize", "secret": base64.b64encode(b"fernet:sealed").decode()}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_version_14_carries_notifications_and_folder_listings_over(
        request: pytest.FixtureRequest, tmp_path: Path, dialect: Dialect) -> None:
    target: Path | str = tmp_path / "state.db" if dialect == "sqlite" else request.getfixturevalue("pg_url")
    db = await open_database(target, bundled_migrations(dialect)[:13])
    async with db.transaction() as tx:
        await tx.executemany("INSERT INTO tenants (name, directory_id, application_id, created_at) VALUES (?, 'd', 'a', 0)",
                             [("t",), ("other",)])
        await tx.executemany("INSERT INTO tenant_sync_state (tenant, name, value) VALUES (?, ?, ?)", [
            ("t", "notify:sub:sub-1", json.dumps(SUBSCRIPTION)),
            ("t", "notify:sub:sub-2", json.dumps({**SUBSCRIPTION, "kind": "user", "resource": "users", "mailbox": None,
                                                  "state": "active"})),
            ("t", "notify:due:contact:u1", repr(100.25)), ("t", "notify:due:user:", repr(101.0)),
            ("t", "notify:handshake", json.dumps({"ok": False, "at": 50.0, "reason": "Graph could not validate"})),
            ("t", "notify:last", repr(101.0)),
            ("other", "notify:handshake", json.dumps({"ok": True, "at": 60.0, "reason": None})),
            ("t", "settings", "kept")])
        await tx.executemany("INSERT INTO delta_links (tenant, resource, key, link, updated_at) VALUES (?, ?, ?, ?, ?)", [
            ("t", "contact-folders", "u1", "/users/u1/contactFolders", 77.0),
            ("t", "contacts", "u1:contacts", "https://graph/delta", 78.0)])
    await db.close()
    db = await open_database(target, bundled_migrations(dialect)[:14])
    try:
        store = NotifyStore(db, lambda: 0.0)
        assert await store.subscriptions("t") == [
            StoredSubscription("sub-1", "contact", "users/u1/contacts", "u1", 1234.5, b"fernet:sealed", "reauthorize"),
            StoredSubscription("sub-2", "user", "users", None, 1234.5, b"fernet:sealed", "active")]
        assert await store.take_due("t") == [Due("contact", "u1", 100.25), Due("user", None, 101.0)]
        assert await store.handshake("t") == Handshake(False, 50.0, "Graph could not validate")
        assert await store.handshake("other") == Handshake(True, 60.0, None)
        assert await store.last_notification("t") == 101.0 and await store.last_notification("other") is None
        assert await db.fetchall("SELECT tenant, name FROM tenant_sync_state") == [("t", "settings")]
        assert await SyncStore(db).folder_listings("t") == {"u1": Listing(77.0, pending=False)}
        assert await db.fetchall("SELECT resource, key FROM delta_links") == [("contacts", "u1:contacts")]
    finally:
        await db.close()
