"""Open the state database, whichever backend its target names: the one
place that knows both backends (``state.db`` is the interface they
implement, below them)."""

from __future__ import annotations

from pathlib import Path

from state.db import Database, Migration, is_postgres_url
from state.postgres import open_postgres
from state.sqlite import open_sqlite


async def open_database(target: Path | str, migrations: list[Migration] | None = None, *,
                        password_file: Path | None = None) -> Database:
    """Open and migrate the state database: a SQLite file (created 0600), or a
    ``postgresql://`` URL (its password from ``password_file`` or libpq's own
    ``PGPASSFILE``/``~/.pgpass``, never in the URL)."""
    if is_postgres_url(target):
        return await open_postgres(str(target), migrations, password_file=password_file)
    path = Path(str(target).removeprefix("sqlite:"))
    return await open_sqlite(path, migrations)
