"""The migration files: every version builds, on both backends, exactly the
schema dumped in ``tests/schema/`` when it shipped (databases track version
numbers, not file contents), however far back a database starts; no SQL is
written twice; and the file names follow the rule of :mod:`state.schema`."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import pytest

from daemon.errors import StateError
from schema_dump import FIXTURES, built, dump, fixture_path
from sim.postgres import PostgresServer
from state.open import open_database
from state.schema import Dialect, Migration, bundled_migrations, migrations_for, spelled_for

DUMPS = sorted(FIXTURES.glob("v*.txt"))
LATEST = len(bundled_migrations())


def dumped_version(fixture: Path) -> int:
    return int(fixture.name.split(".")[0].removeprefix("v"))


def migration_files() -> dict[str, str]:
    folder = resources.files("state").joinpath("migrations")
    return {entry.name: entry.read_text("utf-8") for entry in folder.iterdir() if entry.name.endswith(".sql")}


def repeated_statements(files: dict[str, str]) -> dict[str, list[str]]:
    """Statements (comments dropped, whitespace and case folded, types in one
    spelling) that more than one file holds, with those files."""
    holders: dict[str, list[str]] = {}
    for name, text in sorted(files.items()):
        for statement in re.sub(r"--[^\n]*", "", spelled_for("sqlite", text)).split(";"):
            words = statement.lower().split()
            if len(words) >= 3:  # shorter is no statement worth sharing (none of ours is)
                holders.setdefault(re.sub(r" ?([(),]) ?", r"\1", " ".join(words)), []).append(name)
    return {statement: names for statement, names in holders.items() if len(set(names)) > 1}


def test_the_current_version_and_the_last_rewritten_one_have_dumps() -> None:
    names = {dump.name for dump in DUMPS}
    for version in (7, LATEST):
        assert {fixture_path(version, "sqlite").name, fixture_path(version, "postgresql").name} <= names


@pytest.mark.parametrize("fixture", [f for f in DUMPS if f.name.endswith(".sqlite.txt")], ids=lambda f: f.name)
async def test_sqlite_builds_exactly_the_dumped_schema(tmp_path: Path, fixture: Path) -> None:
    assert await built(tmp_path / "state.db", dumped_version(fixture)) == fixture.read_text()


@pytest.mark.parametrize("fixture", [f for f in DUMPS if f.name.endswith(".postgresql.txt")], ids=lambda f: f.name)
async def test_postgres_builds_exactly_the_dumped_schema(pg_url: str, fixture: Path) -> None:
    assert await built(pg_url, dumped_version(fixture)) == fixture.read_text()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_upgrading_from_every_past_version_builds_the_latest_schema(
        request: pytest.FixtureRequest, tmp_path: Path, dialect: Dialect) -> None:
    expected = fixture_path(LATEST, dialect).read_text()
    for start in range(LATEST):
        if dialect == "sqlite":
            target: Path | str = tmp_path / f"from-{start}.db"
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            target = server.create_database(f"upgrade{os.getpid()}_{start}")
        old = await open_database(target, bundled_migrations(dialect)[:start])
        await old.close()
        db = await open_database(target)
        try:
            assert await dump(db) == expected, f"upgraded from version {start}"
        finally:
            await db.close()


def test_no_sql_statement_is_written_twice() -> None:
    assert repeated_statements(migration_files()) == {}


def test_a_statement_repeated_in_another_spelling_is_found() -> None:
    files = {"0001_a.sqlite.sql": "-- SQLite's\nCREATE TABLE t (at REAL NOT NULL);",
             "0001_a.postgresql.sql": "CREATE TABLE t (\n    at DOUBLE PRECISION NOT NULL\n);  -- PostgreSQL's"}
    assert repeated_statements(files) == {"create table t(at real not null)": sorted(files)}


def test_a_version_is_its_portable_part_then_the_dialects_own() -> None:
    files = {"0001_start.sql": "CREATE TABLE t (at DOUBLE PRECISION, data BYTEA, key BIGINT);",
             "0001_start.postgresql.sql": "ALTER TABLE t ADD COLUMN seq BIGSERIAL;",
             "0002_more.sqlite.sql": "UPDATE t SET at = 0;", "0002_more.postgresql.sql": "UPDATE t SET at = 1;"}
    assert migrations_for("postgresql", files) == [
        Migration(1, "start", "CREATE TABLE t (at DOUBLE PRECISION, data BYTEA, key BIGINT);\n"
                              "ALTER TABLE t ADD COLUMN seq BIGSERIAL;"),
        Migration(2, "more", "UPDATE t SET at = 1;")]
    assert migrations_for("sqlite", files) == [
        Migration(1, "start", "CREATE TABLE t (at REAL, data BLOB, key INTEGER);"),
        Migration(2, "more", "UPDATE t SET at = 0;")]


@pytest.mark.parametrize(("files", "refusal"), [
    ({"0001_a.mysql.sql": "SELECT 1;"}, "0001_a.mysql.sql is not named NNNN_name.sql"),
    ({"1_a.sql": "SELECT 1;"}, "1_a.sql is not named"),
    ({"0001_a.sql": "SELECT 1;", "0001_b.sqlite.sql": "SELECT 2;"}, "migration 1 has two names"),
    ({"0001_a.sqlite.sql": "SELECT 1;"}, r"migration 1 \(a\) has no file for postgresql"),
    ({"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"}, "numbering has a gap at 2"),
])
def test_a_misnamed_or_missing_file_is_refused(files: dict[str, str], refusal: str) -> None:
    with pytest.raises(StateError, match=refusal):
        migrations_for("sqlite", files)


async def test_version_4_carries_the_markers_of_an_older_sqlite_database_over(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = await open_database(path, bundled_migrations()[:3])
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO tenants (name, directory_id, application_id, created_at) VALUES ('t', 'd', 'a', 0)")
        await tx.executemany("INSERT INTO tenant_sync_state (tenant, name, value) VALUES ('t', ?, ?)", [
            ("unreadable:u1", "1"), ("calendar-unreadable:u2", "1"), ("folders:u1", "f1,f2"),
            ("folders-checked:u1", "1"), ("events-window:u1", "2026-01-05"), ("busy:u1", "fp"), ("busy:u3", "fp3"),
            ("run-lock", "x"), ("settings", "kept")])
        await tx.execute("INSERT INTO graph_objects (tenant, kind, id, data, updated_at) VALUES"
                         " ('t', 'contact', 'c1', '{\"_owner\": \"u1\", \"_folder\": \"f1\"}', 0),"
                         " ('t', 'user', 'u1', '{\"_owner\": \"nobody\"}', 0)")
        await tx.execute("INSERT INTO synced_objects (tenant, kind, graph_id, pbx_id, payload_hash, updated_at) VALUES"
                         " ('t', 'user', 'u9', NULL, 'pending-create', 42), ('t', 'user', 'u1', 'p1', 'h', 1)")
    await db.close()
    db = await open_database(path, bundled_migrations()[:4])
    try:
        assert await db.fetchall("SELECT id, owner, folder FROM graph_objects ORDER BY id") == [
            ("c1", "u1", "f1"), ("u1", None, None)]
        assert await db.fetchall("SELECT user_id, resource, since FROM unreadable_mailboxes ORDER BY 1") == [
            ("u1", "contacts", 0), ("u2", "calendar", 0)]
        assert await db.fetchall("SELECT user_id, folder_id FROM contact_folders ORDER BY 2") == [
            ("u1", "f1"), ("u1", "f2")]
        assert await db.fetchall("SELECT user_id, window_day, busy_fingerprint FROM calendar_state ORDER BY 1") == [
            ("u1", "2026-01-05", "fp"), ("u3", None, "fp3")]
        assert await db.fetchall("SELECT kind, graph_id, since FROM pending_creates") == [("user", "u9", 42)]
        assert await db.fetchall("SELECT graph_id FROM synced_objects") == [("u1",)]
        assert await db.fetchall("SELECT name FROM tenant_sync_state") == [("settings",)]
        assert await db.fetchall("SELECT kind FROM held_deprovisions") == []
    finally:
        await db.close()
