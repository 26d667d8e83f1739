"""The embedded backend: one SQLite file, created 0600, in WAL mode with
foreign keys on. One connection serves every task of the process."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from daemon.errors import StateError
from state.db import Database, Params, Row
from state.errors import StateWriteFailed
from state.schema import Migration, bundled_migrations

BUSY_TIMEOUT_MS = 5000
STREAM_BATCH = 500
# Errors of our own statements, not of the disk: left as they are (a bug shows as one).
CONSTRAINT_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
STATE_FILE_MODE = 0o600


class SqliteTransaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self.conn.execute(sql, params)
        return int(cursor.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        batch = list(rows)
        if batch:  # as the PostgreSQL side does: no round trip to the database's thread for nothing
            await self.conn.executemany(sql, batch)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self.conn.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self.conn.execute(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]


class SqliteDatabase(Database):
    dialect = "sqlite"
    insertion_order = "rowid"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.location = str(path)
        self._reader = SqliteTransaction(conn)
        # One connection serves every task (tenants' runs, calendar polls, HTTP
        # handlers, a reload): transactions take turns, or two tasks' BEGINs
        # would meet on it ("cannot start a transaction within a transaction").
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception.

        A driver error (``disk I/O error``, ``database or disk is full``) becomes
        :class:`StateWriteFailed`, so a run ends with a reason, not a traceback."""
        async with self._turn:
            async with self._immediate() as tx:
                yield tx

    @asynccontextmanager
    async def _immediate(self) -> AsyncIterator[SqliteTransaction]:
        try:
            await self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise self._write_failed(err) from err
        try:
            yield self._reader
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

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self._reader.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._reader.fetchall(sql, params)

    async def stream(self, sql: str, params: Params = ()) -> AsyncIterator[Row]:
        async with self.conn.execute(sql, params) as cursor:
            while batch := await cursor.fetchmany(STREAM_BATCH):
                for row in batch:
                    yield tuple(row)

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self.conn.close()


async def open_sqlite(path: Path, migrations: list[Migration] | None = None) -> SqliteDatabase:
    """Open (creating 0600 if needed) and migrate the database at ``path``."""
    migrations = bundled_migrations("sqlite") if migrations is None else migrations
    _create_private_file(path)
    try:
        conn = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as err:
        raise StateError(f"cannot open state database {path}: {err}") from err
    db = SqliteDatabase(conn, path)
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


async def migrate(db: SqliteDatabase, migrations: list[Migration]) -> None:
    """Apply every migration above the database's version, each atomically."""
    current = await db.schema_version()
    db.check_version(current, migrations)
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
        raise state_access_error(path, "create", err) from err


def state_access_error(path: Path, action: str, err: OSError) -> StateError:
    """What ``run``, ``status`` and a dry run say when the state file cannot be reached."""
    return StateError(
        f"cannot {action} state database {path}: {err.strerror}",
        hint="check [state] path and the directory's owner (StateDirectory= under systemd)",
    )
