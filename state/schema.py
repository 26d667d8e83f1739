"""The numbered migrations in ``state/migrations/``: which files make version N
of the schema for one backend.

A file's name says which backends it is for: ``NNNN_name.sql`` is portable
and runs on both; ``NNNN_name.sqlite.sql`` or ``NNNN_name.postgresql.sql``
runs on that backend only, after the portable file of the same version if
there is one (both in the one transaction that also bumps the version).
Portable files spell column types the PostgreSQL way; for SQLite the three
types it spells differently are rewritten (:data:`SQLITE_SPELLING`), so a
SQLite database declares the same ``REAL``/``BLOB``/``INTEGER`` it always did.

Databases record the version number, not the files: a rewritten file must
build exactly the schema it built before (``tests/schema/`` holds those).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Literal, get_args

from daemon.errors import StateError

Dialect = Literal["sqlite", "postgresql"]
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)
FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<dialect>[a-z]+))?\.sql")
# PostgreSQL's name of a type -> SQLite's, for portable files. Whole upper-case words only:
# DOUBLE PRECISION and BIGINT already have SQLite's REAL and INTEGER affinity, but BYTEA would get NUMERIC.
SQLITE_SPELLING = (
    (re.compile(r"\bDOUBLE\s+PRECISION\b"), "REAL"),
    (re.compile(r"\bBYTEA\b"), "BLOB"),
    (re.compile(r"\bBIGINT\b"), "INTEGER"),
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def spelled_for(dialect: Dialect, portable_sql: str) -> str:
    """A portable file's SQL with its types spelled the way ``dialect`` declares them."""
    if dialect == "sqlite":
        for postgres_type, sqlite_type in SQLITE_SPELLING:
            portable_sql = postgres_type.sub(sqlite_type, portable_sql)
    return portable_sql


def bundled_migrations(dialect: Dialect = "sqlite") -> list[Migration]:
    """The numbered migrations shipped for one backend, in order."""
    folder = resources.files("state").joinpath("migrations")
    files = {entry.name: entry.read_text("utf-8") for entry in folder.iterdir() if entry.name.endswith(".sql")}
    return migrations_for(dialect, files)


def migrations_for(dialect: Dialect, files: Mapping[str, str]) -> list[Migration]:
    """Each version's portable part, then ``dialect``'s own part, as one migration.

    A file named against the rule, two names for one version, a version that
    one backend has no file for, or a gap in the numbers is a packaging
    mistake, refused here rather than half-applied."""
    names: dict[int, str] = {}
    parts: dict[int, dict[str | None, str]] = {}
    for file_name, sql in files.items():
        match = FILE_NAME.fullmatch(file_name)
        if match is None or match["dialect"] not in (None, *DIALECTS):
            raise StateError(f"migration file {file_name} is not named NNNN_name.sql or NNNN_name.<dialect>.sql "
                             f"(dialect one of {', '.join(DIALECTS)})")
        version, name = int(match["version"]), match["name"]
        if names.setdefault(version, name) != name:
            raise StateError(f"migration {version} has two names: {names[version]} and {name}")
        parts.setdefault(version, {})[match["dialect"]] = sql
    migrations = []
    for version in sorted(parts):
        for backend in DIALECTS:
            if None not in parts[version] and backend not in parts[version]:
                raise StateError(f"migration {version} ({names[version]}) has no file for {backend}")
        portable, own = parts[version].get(None), parts[version].get(dialect)
        sql = "\n".join(part for part in (portable and spelled_for(dialect, portable), own) if part)
        migrations.append(Migration(version, names[version], sql))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise StateError(f"migration numbering has a gap at {expected}")
    return migrations
