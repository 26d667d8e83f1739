"""The state database: one interface, two backends.

The database is the daemon's only durable memory (deltaLinks, Graph-to-PBX
mappings, extension numbers, runs, the token cache). SQLite
(:mod:`state.sqlite`) is the embedded default for one PBX host; PostgreSQL
(:mod:`state.postgres`) is the shared state of several daemons. The queries
(``state/store.py`` and its siblings) are written once, with ``?``
placeholders, against :class:`Database` and :class:`Transaction`; the few
spellings that differ are methods here (:meth:`Database.json_text`,
:attr:`Database.insertion_order`).

Both backends migrate with numbered SQL files (``state/migrations`` for
SQLite, ``state/migrations/postgresql`` for PostgreSQL, the same numbers),
each applied together with its version bump in one transaction, and both
refuse a database newer than the code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from daemon.errors import SchemaTooNew, StateError

Dialect = Literal["sqlite", "postgresql"]
Row = Sequence[Any]
Params = Sequence[Any]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations(dialect: Dialect = "sqlite") -> list[Migration]:
    """The numbered migrations shipped for one backend, in order."""
    folder = resources.files("state").joinpath("migrations")
    if dialect == "postgresql":
        folder = folder.joinpath("postgresql")
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


class Transaction(Protocol):
    """The statements of one transaction (``async with db.transaction() as tx``)."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


class Database(ABC):
    """One state database. Reads outside a transaction see committed data;
    writes go through :meth:`transaction`, which commits or rolls back whole.
    A driver's error of the disk or the connection becomes
    :class:`~state.errors.StateWriteFailed`, so a run ends with a reason."""

    dialect: Dialect
    location: str  # for messages: a path, or a URL without its password
    insertion_order: str  # a column that orders a table's rows as inserted (ties of equal timestamps)

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    @abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abstractmethod
    def stream(self, sql: str, params: Params = ()) -> AsyncIterator[Row]:
        """The rows one batch at a time: a large table is never held whole."""

    @abstractmethod
    async def schema_version(self) -> int: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def json_text(self, column: str, key: str) -> str:
        """SQL for the text of a top-level key of a JSON text column."""

    def check_version(self, current: int, migrations: list[Migration]) -> None:
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise SchemaTooNew(
                f"state database {self.location} has schema version {current}, "
                f"but this m365sync only knows versions up to {latest}",
                hint="install the newer m365sync that wrote it, or restore a backup "
                "taken before the upgrade",
            )


def redacted_url(url: str) -> str:
    """The URL without its password, for messages, logs and config errors."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = (parts.username or "") + "@" + (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port that is not a number: show nothing of it
        return "(a URL, not shown)"
    return urlunsplit(parts._replace(netloc=netloc))


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))
