"""Opening the state database: the one place that chooses the backend, so
:mod:`state.db` (the interface both backends implement) imports neither."""

from __future__ import annotations

from pathlib import Path

from state.db import Database
from state.schema import Migration
from state.sqlite import open_sqlite


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


async def open_database(target: Path | str, migrations: list[Migration] | None = None, *,
                        password_file: Path | None = None) -> Database:
    """Open and migrate the state database: a SQLite file (created 0600), or a
    ``postgresql://`` URL (its password from ``password_file`` or libpq's own
    ``PGPASSFILE``/``~/.pgpass``, never in the URL)."""
    if is_postgres_url(target):
        from state.postgres import open_postgres  # asyncpg is imported only by those who use it

        return await open_postgres(str(target), migrations, password_file=password_file)
    return await open_sqlite(Path(str(target).removeprefix("sqlite:")), migrations)
