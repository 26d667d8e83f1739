"""A normalized dump of the schema the migrations build, one fact a line:
tables, columns (type, nullability, default), keys, unique constraints,
indexes with their columns and WHERE clauses, foreign keys, and on SQLite the
stored ``CREATE`` text itself. The migrations are tracked by version number,
so a migration file that is rewritten must still build exactly this; the
dumps under ``tests/schema/`` say what each version built when it shipped
(``tests/test_migrations.py`` compares).

    .venv/bin/python tests/schema_dump.py 8   # writes tests/schema/v8.{sqlite,postgresql}.txt

builds each version from the migrations as they are now (PostgreSQL on a
throw-away server of its own) and writes its dumps.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path

from sim.postgres import PostgresServer
from state.db import Database
from state.open import is_postgres_url, open_database
from state.schema import Dialect, bundled_migrations

FIXTURES = Path(__file__).resolve().parent / "schema"


def fixture_path(version: int, dialect: Dialect) -> Path:
    return FIXTURES / f"v{version}.{dialect}.txt"


def _one_line(sql: str) -> str:
    return " ".join(sql.split())


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def sqlite_dump(db: Database) -> str:
    lines = [f"version {await db.schema_version()}"]
    objects = await db.fetchall("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY tbl_name, type, name")
    for kind, name, table, sql in objects:
        if kind != "table":
            continue
        lines.append(f"table {name}")
        for _cid, column, type_, notnull, default, pk, hidden in await db.fetchall(
                f"PRAGMA table_xinfo({_quoted(name)})"):
            lines.append(f"  column {column} {type_}{' NOT NULL' if notnull else ''}"
                         f"{f' DEFAULT {default}' if default is not None else ''}"
                         f"{f' pk#{pk}' if pk else ''}{f' hidden={hidden}' if hidden else ''}")
        for _id, seq, parent, local, remote, on_update, on_delete, match in await db.fetchall(
                f"PRAGMA foreign_key_list({_quoted(name)})"):
            lines.append(f"  foreign key #{seq} ({local}) references {parent} ({remote})"
                         f" on update {on_update} on delete {on_delete} match {match}")
        for _seq, index, unique, origin, partial in sorted(await db.fetchall(f"PRAGMA index_list({_quoted(name)})"),
                                                           key=lambda row: str(row[1])):
            keys = [f"{col}{' DESC' if desc else ''} COLLATE {coll}"
                    for _seqno, _cid, col, desc, coll, key in await db.fetchall(f"PRAGMA index_xinfo({_quoted(index)})")
                    if key]
            where = ""
            if partial:
                index_sql = next(str(row[3]) for row in objects if row[1] == index)
                where = " WHERE " + _one_line(re.split(r"\bWHERE\b", index_sql, maxsplit=1, flags=re.I)[1])
            lines.append(f"  index {index} {'unique ' if unique else ''}origin={origin} ({', '.join(keys)}){where}")
        lines.append(f"  sql {_one_line(sql)}")
    for kind, name, table, sql in objects:
        if kind != "table":
            lines.append(f"{kind} {name} on {table}: {_one_line(sql) if sql else '(automatic)'}")
    return "\n".join(lines) + "\n"


async def postgres_dump(db: Database) -> str:
    lines = [f"version {await db.schema_version()}"]
    here = "relnamespace = current_schema()::regnamespace"
    for (table,) in await db.fetchall(f"SELECT relname FROM pg_class WHERE relkind = 'r' AND {here} ORDER BY 1"):
        lines.append(f"table {table}")
        for column, type_, notnull, default in await db.fetchall(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)"
                " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
                f" WHERE c.relname = ? AND c.{here} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                (table,)):
            lines.append(f"  column {column} {type_}{' NOT NULL' if notnull else ''}"
                         f"{f' DEFAULT {default}' if default is not None else ''}")
        for name, definition in await db.fetchall(
                "SELECT k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
                f" WHERE c.relname = ? AND c.{here} AND k.contype <> 'n' ORDER BY 1", (table,)):  # nullability: above
            lines.append(f"  constraint {name} {definition}")
        for name, definition in await db.fetchall(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ?"
                " ORDER BY 1", (table,)):
            lines.append(f"  index {name} {definition}")
    for name, type_, table, column in await db.fetchall(
            "SELECT s.relname, format_type(q.seqtypid, NULL), t.relname, a.attname FROM pg_class s"
            " JOIN pg_sequence q ON q.seqrelid = s.oid"
            " LEFT JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'"
            " LEFT JOIN pg_class t ON t.oid = d.refobjid"
            " LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            f" WHERE s.relkind = 'S' AND s.{here} ORDER BY 1"):
        lines.append(f"sequence {name} {type_} owned by {table}.{column}")
    for name, kind in await db.fetchall(
            f"SELECT relname, relkind::text FROM pg_class WHERE relkind NOT IN ('r', 'i', 'S') AND {here} ORDER BY 1"):
        lines.append(f"relation {name} kind {kind}")
    return "\n".join(lines) + "\n"


async def dump(db: Database) -> str:
    return await (sqlite_dump(db) if db.dialect == "sqlite" else postgres_dump(db))


async def built(target: Path | str, version: int | None = None) -> str:
    """The dump of a new database (a SQLite path, or an empty PostgreSQL database's URL) migrated to
    ``version`` (None: the latest)."""
    dialect: Dialect = "postgresql" if is_postgres_url(target) else "sqlite"
    db = await open_database(target, bundled_migrations(dialect)[:version])
    try:
        return await dump(db)
    finally:
        await db.close()


async def write_fixtures(versions: list[int]) -> None:
    server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for version in versions:
                fixture_path(version, "sqlite").write_text(await built(Path(scratch) / f"v{version}.db", version))
                fixture_path(version, "postgresql").write_text(await built(server.create_database(f"v{version}"), version))
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(write_fixtures([int(arg) for arg in sys.argv[1:]]))
