"""The shared backend: PostgreSQL through asyncpg, a small connection pool.

Statements are written once with SQLite's ``?`` placeholders; here they
become ``$1, $2, ...`` (translated once per statement text and cached). Each
transaction takes a pooled connection of its own, so tasks do not take turns
as on SQLite. A lost connection, a full disk or a server shutting down
becomes :class:`~state.errors.StateWriteFailed` (or ``StateReadFailed``), so
a run ends with a reason; errors of our own statements are left as they are.

The password never sits in the configured URL: it comes from
``[state] password_file``, or from libpq's own ``PGPASSFILE``/``~/.pgpass``
(asyncpg reads them the way libpq does).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from daemon.errors import StateError
from daemon.redact import remember_secret
from state.db import Database, Params, Row, redacted_url
from state.errors import StateReadFailed, StateWriteFailed
from state.schema import Migration, bundled_migrations

STREAM_BATCH = 500
POOL_MAX = 8
# Our own statements' mistakes and constraint violations: left as they are, a bug shows as one.
OWN_ERRORS = (asyncpg.IntegrityConstraintViolationError, asyncpg.SyntaxOrAccessError, asyncpg.DataError)
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, ConnectionError)
# A connection the server dropped (a restart, a cut network): the pool's idle ones are all dead then.
LOST_CONNECTION = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError)
VERSION_LOCK = 0x6D333635  # advisory lock taken while migrating: two daemons starting at once migrate once


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...``; a ``?`` inside a quoted literal is left alone."""
    out, number, quote = [], 0, ""
    for char in sql:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


def _count(status: str) -> int:
    """Rows changed, from a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    match = re.search(r"(\d+)$", status or "")
    return int(match.group(1)) if match else 0


Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class PostgresTransaction:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return _count(await self.conn.execute(numbered(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        batch = list(rows)
        if batch:
            await self.conn.executemany(numbered(sql), batch)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row = await self.conn.fetchrow(numbered(sql), *params)
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return [tuple(row) for row in await self.conn.fetch(numbered(sql), *params)]


class PostgresDatabase(Database):
    dialect = "postgresql"
    insertion_order = "seq"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url
        self.location = redacted_url(url)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    yield PostgresTransaction(conn)
        except OWN_ERRORS:
            raise
        except DRIVER_ERRORS as err:
            await self._drop_dead_connections(err)
            raise StateWriteFailed(f"cannot write the state database {self.location}: {_reason(err)}",
                                   hint="check the PostgreSQL server and its disk; the next run repeats this one") from err

    async def _drop_dead_connections(self, err: BaseException) -> None:
        """After a lost connection, the pool opens new ones: its idle ones died with the old server."""
        if isinstance(err, LOST_CONNECTION):
            await self.pool.expire_connections()

    async def _read(self, method: str, sql: str, params: Params) -> Any:
        """A read; one retry on a new connection when the pooled one died (a server restarted while idle)."""
        try:
            return await self._read_once(method, sql, params)
        except StateReadFailed as err:
            if not isinstance(err.__cause__, LOST_CONNECTION):
                raise
        return await self._read_once(method, sql, params)

    async def _read_once(self, method: str, sql: str, params: Params) -> Any:
        try:
            async with self.pool.acquire() as conn:
                return await getattr(PostgresTransaction(conn), method)(sql, params)
        except OWN_ERRORS:
            raise
        except DRIVER_ERRORS as err:
            await self._drop_dead_connections(err)
            raise StateReadFailed(f"cannot read the state database {self.location}: {_reason(err)}",
                                  hint="check the PostgreSQL server; the next run repeats this one") from err

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._read("fetchone", sql, params)
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = await self._read("fetchall", sql, params)
        return rows

    async def stream(self, sql: str, params: Params = ()) -> AsyncIterator[Row]:
        try:
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                async for row in conn.cursor(numbered(sql), *params, prefetch=STREAM_BATCH):
                    yield tuple(row)
        except OWN_ERRORS:
            raise
        except DRIVER_ERRORS as err:
            raise StateReadFailed(f"cannot read the state database {self.location}: {_reason(err)}") from err

    def json_text(self, column: str, key: str) -> str:
        return f"(({column})::jsonb ->> '{key}')"

    async def schema_version(self) -> int:
        async with self.pool.acquire() as conn:
            return await _version(conn)

    async def close(self) -> None:
        await self.pool.close()


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__


async def _version(conn: Conn) -> int:
    exists = await conn.fetchval("SELECT to_regclass('m365sync_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM m365sync_schema"))


def read_password(password_file: Path | None) -> str | None:
    """The password from ``[state] password_file``; None leaves it to libpq's PGPASSFILE / ~/.pgpass."""
    if password_file is None:
        return None
    try:
        password = password_file.read_text("utf-8").strip()
    except OSError as err:
        raise StateError(f"cannot read the PostgreSQL password file {password_file}: {err.strerror}") from err
    remember_secret(password)  # redacted from everything, as every secret read
    return password


async def open_postgres(url: str, migrations: list[Migration] | None = None, *,
                        password_file: Path | None = None, pool_max: int = POOL_MAX) -> PostgresDatabase:
    """Connect, then apply every migration above the database's version."""
    migrations = bundled_migrations("postgresql") if migrations is None else migrations
    if urlsplit(url).password is not None:
        raise StateError("the [state] url carries a password",
                         hint="put the password in [state] password_file or ~/.pgpass, not in the URL")
    try:
        pool = await asyncpg.create_pool(url, password=read_password(password_file), min_size=1, max_size=pool_max,
                                         command_timeout=60)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as err:
        raise StateError(f"cannot connect to the state database {redacted_url(url)}: {_reason(err)}",
                         hint="check [state] url, the server, and the password (password_file or ~/.pgpass)") from err
    db = PostgresDatabase(pool, url)
    try:
        await migrate(db, migrations)
    except BaseException:
        await pool.close()
        raise
    return db


async def migrate(db: PostgresDatabase, migrations: list[Migration]) -> None:
    """Each migration with its version row in one transaction, under an advisory
    lock so that daemons starting together do not race."""
    async with db.pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", VERSION_LOCK)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS m365sync_schema (version INTEGER PRIMARY KEY,"
                               " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            current = await _version(conn)
            db.check_version(current, migrations)
            for migration in migrations:
                if migration.version <= current:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute("INSERT INTO m365sync_schema (version) VALUES ($1)", migration.version)
                except asyncpg.PostgresError as err:
                    raise StateError(f"migration {migration.version} ({migration.name}) failed on "
                                     f"{db.location}: {err}") from err
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", VERSION_LOCK)
