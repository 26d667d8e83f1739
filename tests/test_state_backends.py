"""Both state backends behind one interface: the same schema, migrations that
are atomic and refuse the future, streaming, errors of the server become
readable ones, and ``state copy`` moves an installation row for row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from daemon.errors import SchemaTooNew, StateError
from sim.generator import generate_tenant
from state.backends import open_database
from state.copy import NOT_COPIED, OWN_COLUMNS, TABLES, copy_database
from state.db import Database, Migration, bundled_migrations
from state.errors import StateWriteFailed
from state.postgres import numbered
from state.pushed import Failed, Pushed
from state.store import Store
from state.sync_store import SyncStore
from sync_fixtures import SyncEnv


async def columns_of(db: Database) -> dict[str, set[str]]:
    if db.dialect == "sqlite":
        tables = [r[0] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: {r[1] for r in await db.fetchall(f"PRAGMA table_info({t})")} for t in tables}
    out: dict[str, set[str]] = {}
    for table, column in await db.fetchall(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"):
        out.setdefault(table, set()).add(column)
    out.pop("m365sync_schema", None)
    return out


async def test_both_backends_have_the_same_schema_and_every_table_is_copied(tmp_path: Path, pg_url: str) -> None:
    sqlite, postgres = await open_database(tmp_path / "state.db"), await open_database(pg_url)
    try:
        assert await sqlite.schema_version() == await postgres.schema_version() == len(bundled_migrations())
        assert len(bundled_migrations("postgresql")) == len(bundled_migrations("sqlite"))
        on_sqlite, on_postgres = await columns_of(sqlite), await columns_of(postgres)
        assert {t: c - OWN_COLUMNS.get(t, set()) for t, c in on_postgres.items()} == on_sqlite
        assert set(TABLES) | NOT_COPIED == set(on_sqlite)
        assert {t: set(c) for t, c in TABLES.items()} == {t: c for t, c in on_sqlite.items() if t not in NOT_COPIED}
    finally:
        await sqlite.close()
        await postgres.close()


async def test_a_postgres_database_newer_than_the_code_is_refused(pg_url: str) -> None:
    db = await open_database(pg_url)
    newer = len(bundled_migrations("postgresql")) + 1
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO m365sync_schema (version) VALUES (?)", (newer,))
    await db.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {newer}"):
        await open_database(pg_url)


async def test_a_failing_postgres_migration_changes_nothing(pg_url: str) -> None:
    good = bundled_migrations("postgresql")
    broken = Migration(len(good) + 1, "broken", "CREATE TABLE half (x INTEGER); SELECT * FROM missing;")
    with pytest.raises(StateError, match=rf"migration {len(good) + 1} \(broken\) failed"):
        await open_database(pg_url, [*good, broken])
    db = await open_database(pg_url, good)
    try:
        assert await db.schema_version() == len(good)
        assert await db.fetchone("SELECT to_regclass('half')") == (None,)
    finally:
        await db.close()


async def test_daemons_starting_together_migrate_once(postgres_server: object, pg_url: str) -> None:
    opened = await asyncio.gather(*(open_database(pg_url) for _ in range(4)))
    try:
        rows = await opened[0].fetchall("SELECT version FROM m365sync_schema ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, len(bundled_migrations("postgresql")) + 1))
    finally:
        for db in opened:
            await db.close()


def test_placeholders_are_numbered_outside_quoted_text() -> None:
    assert numbered("SELECT ? WHERE a = '?' AND b IN (?, ?)") == "SELECT $1 WHERE a = '?' AND b IN ($2, $3)"


async def test_a_password_in_the_url_is_refused(postgres_server: object) -> None:
    with pytest.raises(StateError, match="carries a password"):
        await open_database("postgresql://m365sync:hunter2@127.0.0.1:1/db")


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(StateError, match="cannot connect to the state database postgresql://nobody@127.0.0.1:1/db"):
        await open_database("postgresql://nobody@127.0.0.1:1/db")


async def test_runs_in_the_same_instant_keep_their_order(state_target: Path | str) -> None:
    db = await open_database(state_target)
    try:
        store = Store(db, clock=lambda: 5.0)
        await store.register_tenant("t", "d", "a")
        for run_id in ("run-b", "run-a", "run-c"):
            await store.start_run(run_id, "t", "schedule")
        last = await store.last_run("t")
        assert last is not None and last.id == "run-c"
    finally:
        await db.close()


async def test_an_attempt_is_consumed_once_even_when_raced(state_target: Path | str) -> None:
    db = await open_database(state_target)
    try:
        store = Store(db, clock=lambda: 100.0)
        await store.register_tenant("t", "d", "a")
        await store.create_attempt("a1", "t", "flow", lifetime=60, data=b"\x00flow")
        results = await asyncio.gather(*(store.consume_attempt("a1", "flow") for _ in range(5)))
        consumed = [r for r in results if r is not None]
        assert len(consumed) == 1 and consumed[0].data == b"\x00flow"
        assert await store.secret("signing", lambda: b"k1") == await store.secret("signing", lambda: b"k2") == b"k1"
    finally:
        await db.close()


async def test_copies_stream_in_id_order_and_bookkeeping_quarantines(state_target: Path | str) -> None:
    db = await open_database(state_target)
    try:
        await Store(db).register_tenant("t", "d", "a")
        sync = SyncStore(db, clock=lambda: 1.0)
        users = [{"id": f"u{i:04d}", "userPrincipalName": f"User{i}@Contoso.example"} for i in range(1200)]
        await sync.merge_changes("t", "user", users)
        ids = [copy.id async for copy, _ in sync.iter_with_synced("t", "user")]
        assert ids == sorted(u["id"] for u in users)
        found = await sync.find_user("t", "user7@contoso.EXAMPLE")
        assert found is not None and found.id == "u0007"
        await sync.apply_bookkeeping("t", [Pushed("user", "u0001", "pbx-1", {"a": 1}, "h", None, True)])
        assert await sync.pbx_ids("t", "user") == {"u0001": "pbx-1"}
        assert await sync.active_users("t") == [("u0001", "pbx-1", "User1@Contoso.example")]
        quarantined: set[str] = set()
        for _ in range(5):
            quarantined = await sync.apply_bookkeeping("t", [Failed("user", "u0002", "refused", "fp")])
        assert quarantined == {"u0002"}
    finally:
        await db.close()


async def terminate_connections(db: Database) -> None:
    admin = await asyncpg.connect(db.url)  # type: ignore[attr-defined]
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await admin.close()


async def test_a_cut_connection_is_a_readable_error_and_the_next_statement_reconnects(pg_url: str) -> None:
    db = await open_database(pg_url)
    try:
        store = Store(db)
        await store.register_tenant("t", "d", "a")
        with pytest.raises(StateWriteFailed, match="cannot write the state database postgresql://"):
            async with db.transaction() as tx:
                await tx.execute("UPDATE tenants SET auth_reason = 'x'")
                await terminate_connections(db)  # the server ends this transaction's backend
                await tx.execute("UPDATE tenants SET auth_reason = 'y'")
        assert (await store.tenants())[0].auth_reason is None  # nothing of it was committed
        await store.save_delta_link("t", "users", "link")  # the pool opened a new connection
        assert await store.delta_link("t", "users") == "link"
    finally:
        await db.close()


async def fill(target: Path | str) -> None:
    db = await open_database(target)
    try:
        store, sync = Store(db, clock=lambda: 7.0), SyncStore(db, clock=lambda: 7.0)
        await store.register_tenant("t", "d", "a")
        await store.save_token_cache("t", b"\x01sealed")
        await store.secret("signing", lambda: b"\x02key")
        await store.save_delta_link("t", "users", "https://graph/delta?token=1")
        for run_id in ("r1", "r2"):
            await store.start_run(run_id, "t", "schedule")
            await store.finish_run(run_id, "success", {"n": run_id})
        await sync.merge_changes("t", "user", [{"id": "u1", "userPrincipalName": "a@b.example"}])
        await sync.journal_creates("t", [("user", "u1", "1001")])
        await sync.apply_bookkeeping("t", [Pushed("user", "u1", "pbx-1", {"x": 1}, "h", "W/1", True,
                                                  extension="1001")])
    finally:
        await db.close()


async def dump(target: Path | str) -> dict[str, list[tuple[object, ...]]]:
    db = await open_database(target)
    try:
        return {t: sorted((tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                           for r in await db.fetchall(f"SELECT {', '.join(c)} FROM {t}")), key=repr)
                for t, c in TABLES.items()}
    finally:
        await db.close()


async def test_state_copy_moves_every_row_both_ways_and_never_merges(tmp_path: Path, pg_url: str) -> None:
    sqlite = tmp_path / "state.db"
    await fill(sqlite)
    counts = await copy_database(sqlite, pg_url)
    assert counts["tenants"] == 1 and counts["runs"] == 2 and counts["extension_allocations"] == 1
    assert await dump(pg_url) == await dump(sqlite)
    db = await open_database(pg_url)
    try:
        last = await Store(db).last_run("t")
        assert last is not None and last.id == "r2"
    finally:
        await db.close()
    with pytest.raises(StateError, match="already holds tenants"):
        await copy_database(sqlite, pg_url)
    back = tmp_path / "back.db"
    await copy_database(pg_url, back)
    assert await dump(back) == await dump(sqlite)


async def test_after_state_copy_to_postgres_the_next_run_writes_nothing(sync_env: SyncEnv, pg_url: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli import main

    generate_tenant(sync_env.graph.tenant, users=30, contacts_per_user=1, photo_fraction=0)
    sync_env.configure(personal_contacts={"enabled": True, "require_phone": False})
    first = await sync_env.run()
    assert first.result == "success" and first.counts.get("create", 0) > 0
    await sync_env.db.close()
    assert await asyncio.to_thread(main, ["state", "copy", "--from", f"sqlite:{sync_env.tmp_path / 'state.db'}",
                                          "--to", pg_url]) == 0
    assert "copied 1 tenant(s)" in capsys.readouterr().out
    db = await open_database(pg_url)
    try:
        clock = sync_env.graph.clock.time
        on_postgres = SyncEnv(sync_env.graph, sync_env.pbx, db, Store(db, clock=clock), SyncStore(db, clock=clock),
                              sync_env.tmp_path, sync_env.tenant)
        writes, deltas = on_postgres.pbx_writes(), on_postgres.graph_requests("/users/delta")
        again = await on_postgres.run()
        assert again.result == "success" and again.counts == {} and again.contacts.counts == {}
        assert on_postgres.pbx_writes() == writes
        assert on_postgres.graph_requests("/users/delta") == deltas + 1  # the copied deltaLink, not a new round
    finally:
        await db.close()
        sync_env.db = await open_database(sync_env.tmp_path / "state.db")  # the fixture closes its own


async def test_daemons_registering_a_tenant_together_register_it_once(state_target: Path | str) -> None:
    databases = [await open_database(state_target) for _ in range(3)]
    try:
        changed = await asyncio.gather(*(Store(db).register_tenant("t", "d", "a") for db in databases for _ in range(3)))
        assert changed == [False] * 9
        assert [row.name for row in await Store(databases[0]).tenants()] == ["t"]
    finally:
        for db in databases:
            await db.close()
