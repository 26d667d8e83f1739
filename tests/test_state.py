"""The state database: private file, pragmas, migrations, refusal of the future
(the tests taking ``state_target`` run on SQLite and on PostgreSQL)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import asyncpg
import pytest

from daemon.errors import SchemaTooNew, StateError
from state.open import open_database
from state.schema import Migration, bundled_migrations
from state.store import Store
from state.sync_store import SyncStore

EXPECTED_TABLES = {
    "tenants",
    "delta_links",
    "synced_objects",
    "extension_allocations",
    "runs",
    "token_cache",
}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_database_is_private_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    old_umask = os.umask(0o022)
    try:
        db = await open_database(path)
    finally:
        os.umask(old_umask)
    try:
        store = Store(db)
        await store.register_tenant("t", "d", "a")  # forces a WAL write
        assert mode_of(path) == 0o600
        assert mode_of(Path(f"{path}-wal")) == 0o600
        assert await db.schema_version() == len(bundled_migrations())
        async with db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
            tables = {row[0] for row in await cur.fetchall()}
        assert EXPECTED_TABLES <= tables
        async with db.conn.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone()) == ("wal",)
        async with db.conn.execute("PRAGMA foreign_keys") as cur:
            assert (await cur.fetchone()) == (1,)
        async with db.conn.execute("PRAGMA busy_timeout") as cur:
            assert (await cur.fetchone()) == (5000,)
    finally:
        await db.close()


async def test_existing_loose_file_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    db = await open_database(path)
    await db.close()
    assert mode_of(path) == 0o600


async def test_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = await open_database(path)
    newer = len(bundled_migrations()) + 1
    await db.conn.execute(f"PRAGMA user_version = {newer}")
    await db.close()
    with pytest.raises(SchemaTooNew) as caught:
        await open_database(path)
    message = str(caught.value)
    assert f"schema version {newer}" in message
    assert "install the newer m365sync" in message


async def test_reopening_keeps_data_and_applies_nothing_twice(state_target: Path | str) -> None:
    db = await open_database(state_target)
    await Store(db).register_tenant("t", "d", "a")
    await db.close()
    db = await open_database(state_target)
    try:
        assert [row.name for row in await Store(db).tenants()] == ["t"]
    finally:
        await db.close()


async def test_failing_migration_leaves_version_and_schema_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    good = bundled_migrations()
    broken = Migration(len(good) + 1, "broken", "CREATE TABLE half (x); SELECT * FROM missing;")
    with pytest.raises(StateError, match=rf"migration {len(good) + 1} \(broken\) failed"):
        await open_database(path, [*good, broken])
    db = await open_database(path, good)
    try:
        assert await db.schema_version() == len(good)
        async with db.conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'") as cur:
            assert (await cur.fetchone()) == (0,)
    finally:
        await db.close()


async def test_upgrade_from_every_past_version(tmp_path: Path) -> None:
    migrations = bundled_migrations()
    for start in range(len(migrations)):
        path = tmp_path / f"from-{start}.db"
        db = await open_database(path, migrations[:start])
        assert await db.schema_version() == start
        await db.close()
        db = await open_database(path)
        assert await db.schema_version() == len(migrations)
        await db.close()


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a usable m365sync state database"):
        await open_database(path)


async def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create state database"):
        await open_database(blocker / "state.db")


async def test_changing_app_identity_drops_tokens_but_keeps_mappings(state_target: Path | str) -> None:
    db = await open_database(state_target)
    try:
        store = Store(db, clock=lambda: 1000.0)
        assert await store.register_tenant("t", "dir-1", "app-1") is False
        await store.save_token_cache("t", b"cache")
        await store.set_auth_state("t", "authorized", owner="owner@example.com")
        await store.save_delta_link("t", "users", "https://graph/delta?token=1")
        assert await store.register_tenant("t", "dir-1", "app-1") is False
        assert await store.load_token_cache("t") == b"cache"
        assert await store.register_tenant("t", "dir-1", "app-2") is True
        assert await store.load_token_cache("t") is None
        (row,) = await store.tenants()
        assert row.auth_state == "authorization_required" and not row.has_token_cache
        assert await store.delta_link("t", "users") == "https://graph/delta?token=1"
    finally:
        await db.close()


async def test_delta_links_per_resource_and_key(state_target: Path | str) -> None:
    db = await open_database(state_target)
    try:
        store = Store(db)
        await store.register_tenant("t", "d", "a")
        await store.save_delta_link("t", "contacts", "link-a", key="user-a")
        await store.save_delta_link("t", "contacts", "link-b", key="user-b")
        await store.save_delta_link("t", "contacts", "link-a2", key="user-a")
        assert await store.delta_link("t", "contacts", "user-a") == "link-a2"
        assert await store.delta_link("t", "contacts", "user-b") == "link-b"
        assert await store.delta_link("t", "users") is None
        await store.drop_delta_link("t", "contacts", "user-a")
        assert await store.delta_link("t", "contacts", "user-a") is None
        with pytest.raises((sqlite3.IntegrityError, asyncpg.ForeignKeyViolationError)):  # a bug, not the disk
            await store.save_delta_link("unknown-tenant", "users", "x")
    finally:
        await db.close()


async def test_a_stored_timestamp_comes_back_as_a_number(state_target: Path | str) -> None:
    db = await open_database(state_target)
    try:
        await Store(db).register_tenant("t", "d", "a")
        markers = SyncStore(db)
        assert await markers.timestamp("t", "next_run") is None
        await markers.set_timestamp("t", "next_run", 1_700_000_000.125)
        assert await markers.timestamp("t", "next_run") == 1_700_000_000.125
        await markers.set_value("t", "next_run", "not a number")  # never written so; read as never set
        assert await markers.timestamp("t", "next_run") is None
    finally:
        await db.close()


async def test_runs_are_recorded(state_target: Path | str) -> None:
    db = await open_database(state_target)
    times = iter([1.0, 2.0, 3.0, 4.0])
    try:
        store = Store(db, clock=lambda: next(times))
        await store.register_tenant("t", "d", "a")
        await store.start_run("run-1", "t", "schedule")
        await store.finish_run("run-1", "success", {"users": {"created": 2}})
        run = await store.last_run("t")
        assert run is not None
        assert (run.started_at, run.finished_at, run.result) == (2.0, 3.0, "success")
        assert run.summary == {"users": {"created": 2}}
        assert await store.last_run("other") is None
    finally:
        await db.close()


def test_the_state_key_comes_from_the_config_then_a_credential_then_a_file_beside_the_database(tmp_path: Path) -> None:
    from state.sealing import key_material

    state = tmp_path / "var" / "state.db"
    assert key_material(None, state, {}, create=False) is None  # status and dry runs never create it
    assert not (tmp_path / "var" / "state.db.key").exists()
    key = key_material(None, state, {}, create=True)
    key_file = tmp_path / "var" / "state.db.key"
    assert key is not None and len(key) >= 43 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_material(None, state, {}, create=True) == key  # made once, then read
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "state-key").write_bytes(b"from-systemd\n")
    assert key_material(None, state, {"CREDENTIALS_DIRECTORY": str(credentials)}, create=True) == b"from-systemd"
    configured = tmp_path / "configured-key"
    configured.write_bytes(b"from-the-config")
    assert key_material(configured, state, {"CREDENTIALS_DIRECTORY": str(credentials)}, create=True) == b"from-the-config"
