"""PostgreSQL for the tests: one real server (Debian's ``postgresql``) per
test process, started by :class:`sim.postgres.PostgresServer`, and a new
empty database per test. ``state_target`` runs a test on both backends."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import missing
from sim.postgres import PostgresServer, PostgresUnavailable

_names = itertools.count(1)


def running_server() -> Iterator[PostgresServer]:
    """A started server, stopped and removed afterwards (a fixture's body)."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as err:
        missing(str(err))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from running_server()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A new, empty database's URL."""
    return postgres_server.create_database(f"t{os.getpid()}_{next(_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """What ``open_database`` opens, once for each backend."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    return str(request.getfixturevalue("pg_url"))
