"""Opening the SQLite state database: file mode, pragmas, migrations.

The database is the daemon's only durable memory (deltaLinks, Graph-to-PBX
mappings, extension numbers, runs, the token cache), so it is created 0600,
runs in WAL mode with foreign keys on, and is migrated by numbered SQL files,
each applied together with its version bump in one transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import aiosqlite

from daemon.errors import SchemaTooNew, StateError
from state.errors import StateWriteFailed

BUSY_TIMEOUT_MS = 5000
# Errors of our own statements, not of the disk: left as they are (a bug shows as one).
CONSTRAINT_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
STATE_FILE_MODE = 0o600


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The numbered migrations shipped in ``state/migrations``, in order."""
    folder = resources.files("state").joinpath("migrations")
    migrations = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            migrations.append(
                Migration(int(number), rest.removesuffix(".sql"), entry.read_text("utf-8"))
            )
    migrations.sort(key=lambda m: m.version)
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise StateError(f"migration numbering has a gap at {expected}")
    return migrations


class Database:
    """One connection to the state database; the only owner of its SQL."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        # One connection serves every task (tenants' runs, calendar polls, HTTP
        # handlers, a reload): transactions take turns, or two tasks' BEGINs
        # would meet on it ("cannot start a transaction within a transaction").
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception.

        A driver error (``disk I/O error``, ``database or disk is full``) becomes
        :class:`StateWriteFailed`, so a run ends with a reason, not a traceback."""
        async with self._turn:
            async with self._immediate() as conn:
                yield conn

    @asynccontextmanager
    async def _immediate(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            await self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise self._write_failed(err) from err
        try:
            yield self.conn
        except BaseException as err:
            if self.conn.in_transaction:
                try:
                    await self.conn.rollback()
                except sqlite3.Error:
                    pass  # the original error says more
            if isinstance(err, sqlite3.Error) and not isinstance(err, CONSTRAINT_ERRORS):
                raise self._write_failed(err) from err
            raise
        try:
            await self.conn.commit()
        except sqlite3.Error as err:
            raise self._write_failed(err) from err

    def _write_failed(self, err: sqlite3.Error) -> StateWriteFailed:
        return StateWriteFailed(f"cannot write the state database {self.path}: {err}",
                                hint="check free disk space and the file system; the next run repeats this one")

    async def schema_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self.conn.close()


async def open_database(path: Path, migrations: list[Migration] | None = None) -> Database:
    """Open (creating 0600 if needed) and migrate the database at ``path``."""
    migrations = bundled_migrations() if migrations is None else migrations
    _create_private_file(path)
    try:
        conn = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as err:
        raise StateError(f"cannot open state database {path}: {err}") from err
    db = Database(conn, path)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await migrate(db, migrations)
    except sqlite3.DatabaseError as err:
        await conn.close()
        raise StateError(
            f"{path} is not a usable m365sync state database: {err}",
            hint="point [state] path at another file, or restore a backup",
        ) from err
    except BaseException:
        await conn.close()
        raise
    return db


async def migrate(db: Database, migrations: list[Migration]) -> None:
    """Apply every migration above the database's version, each atomically."""
    current = await db.schema_version()
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise SchemaTooNew(
            f"state database {db.path} has schema version {current}, "
            f"but this m365sync only knows versions up to {latest}",
            hint="install the newer m365sync that wrote it, or restore a backup "
            "taken before the upgrade",
        )
    for migration in migrations:
        if migration.version <= current:
            continue
        script = (
            f"BEGIN IMMEDIATE;\n{migration.sql}\n"
            f"PRAGMA user_version = {migration.version};\nCOMMIT;"
        )
        try:
            await db.conn.executescript(script)
        except sqlite3.Error as err:
            if db.conn.in_transaction:
                await db.conn.rollback()
            raise StateError(
                f"migration {migration.version} ({migration.name}) failed on {db.path}: {err}"
            ) from err


def _create_private_file(path: Path) -> None:
    """Create the file 0600 before SQLite does (SQLite gives WAL files its mode)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, STATE_FILE_MODE)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & ~STATE_FILE_MODE:
                os.fchmod(fd, STATE_FILE_MODE)
        finally:
            os.close(fd)
    except OSError as err:
        raise StateError(
            f"cannot create state database {path}: {err.strerror}",
            hint="check [state] path and the directory's owner (StateDirectory= under systemd)",
        ) from err
