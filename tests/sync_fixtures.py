"""The user engine wired to the Graph simulator and a scim2-server tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.config import ServerConfig, TenantConfig
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import PBX_USER
from daemon.sync.report import RunReport
from daemon.sync.tenant import build_tenant_sync
from graph_fixtures import GraphEnv
from pbx_fixtures import PbxEnv
from state.db import Database
from state.open import open_database
from state.store import Store
from state.sync_store import SyncStore

WRITE_OPS = ("create", "update", "delete", "bulk")


def tenant_config(tmp_path: Path, **sections: Any) -> TenantConfig:
    """A tenant with users enabled from 1001, plus any overrides."""
    users = {"enabled": True, "starting_extension_number": "1001", **sections.pop("users", {})}
    raw: dict[str, Any] = {
        "name": "t",
        "directory_id": "11111111-2222-3333-4444-555555555555",
        "application_id": "66666666-7777-8888-9999-000000000000",
        "pbx": {"scim_url": "http://127.0.0.1:9/v2", "token_file": "pbx-token"},
        "users": users,
        **sections,
    }
    return TenantConfig.model_validate(raw, context={"base_dir": tmp_path})


@dataclass
class SyncEnv:
    graph: GraphEnv
    pbx: PbxEnv
    db: Database
    store: Store
    sync_store: SyncStore
    tmp_path: Path
    tenant: TenantConfig

    def configure(self, **sections: Any) -> None:
        self.tenant = tenant_config(self.tmp_path, **sections)

    def pbx_writes(self) -> int:
        """PBX write requests so far, from the client's own metrics."""
        return _sum_metric(self.pbx.metrics, "m365sync_pbx_requests_total", WRITE_OPS)

    def graph_requests(self, pattern: str) -> int:
        return len(self.graph.sim.requests(pattern))

    async def run(self, writer: Any = None) -> RunReport:
        client = self.pbx.client
        fresh = PbxClient(client.transport, client.base_url, client._token, client.timeout)  # one discovery per run, like the daemon
        writer = writer or fresh
        return await build_tenant_sync(self.tenant, self.store, self.sync_store, self.graph.client, fresh, writer,
                                       self.graph.clock.time).run()

    async def pbx_contacts(self) -> dict[str, dict[str, Any]]:
        contacts: dict[str, dict[str, Any]] = {}
        async for obj in self.pbx.client.iter_objects("Contact"):
            assert obj.external_id is not None and obj.external_id not in contacts, f"duplicate {obj.external_id}"
            contacts[obj.external_id] = dict(obj.data)
        return contacts

    async def pbx_groups(self) -> dict[str, dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        async for obj in self.pbx.client.iter_objects("Group"):
            assert obj.external_id is not None and obj.external_id not in groups
            groups[obj.external_id] = dict(obj.data)
        return groups

    async def pbx_users(self) -> dict[str, dict[str, Any]]:
        """The PBX's users by externalId (every object must have one)."""
        users: dict[str, dict[str, Any]] = {}
        async for obj in self.pbx.client.iter_objects("User"):
            assert obj.external_id is not None
            assert obj.external_id not in users, f"duplicate externalId {obj.external_id}"
            users[obj.external_id] = dict(obj.data)
        numbers = [u[PBX_USER]["extensionNumber"] for u in users.values()]
        assert len(numbers) == len(set(numbers)), "duplicate extension numbers"
        return users


@asynccontextmanager
async def sqlite_sync_env(graph: GraphEnv, pbx: PbxEnv, tmp_path: Path, name: str = "state",
                          **sections: Any) -> AsyncIterator[SyncEnv]:
    """A SyncEnv on its own SQLite file (tenant ``t`` registered), configured with ``sections``; closed after."""
    db = await open_database(tmp_path / f"{name}.db")
    try:
        store = Store(db, clock=graph.clock.time)
        await store.register_tenant("t", "d", "a")
        yield SyncEnv(graph, pbx, db, store, SyncStore(db, clock=graph.clock.time), tmp_path,
                      tenant_config(tmp_path, **sections))
    finally:
        await db.close()


def _sum_metric(metrics: Metrics, name: str, ops: tuple[str, ...]) -> int:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("op") in ops:
                total += sample.value
    return int(total)


def number(user: dict[str, Any]) -> str:
    return str(user[PBX_USER]["extensionNumber"])


@pytest.fixture
def sync_backend() -> str:
    """The state backend of ``sync_env``; a module imports :func:`on_both_backends` to run on both."""
    return "sqlite"


@pytest.fixture(name="sync_backend", params=["sqlite", "postgresql"])
def on_both_backends(request: pytest.FixtureRequest) -> str:
    """``from sync_fixtures import on_both_backends``: every test of that module runs on SQLite and PostgreSQL."""
    return str(request.param)


@pytest.fixture
async def sync_env(graph_env: GraphEnv, pbx: PbxEnv, tmp_path: Path, sync_backend: str,
                   request: pytest.FixtureRequest) -> AsyncIterator[SyncEnv]:
    target = request.getfixturevalue("pg_url") if sync_backend == "postgresql" else tmp_path / "state.db"
    db = await open_database(target)
    store = Store(db, clock=graph_env.clock.time)
    await store.register_tenant("t", "d", "a")
    env = SyncEnv(graph_env, pbx, db, store, SyncStore(db, clock=graph_env.clock.time), tmp_path, tenant_config(tmp_path))
    try:
        yield env
    finally:
        await db.close()


def add_user(env: SyncEnv, index: int, **fields: object) -> str:
    """A member user in the simulator: ``user00N@contoso.example``, enabled, plus ``fields``."""
    user_id = f"00000000-0000-4000-8000-{index:012d}"
    properties = {"displayName": f"User {index}", "userPrincipalName": f"user{index:03d}@contoso.example",
                  "mail": f"user{index:03d}@contoso.example", "accountEnabled": True, "userType": "Member", **fields}
    env.graph.tenant.add_user(user_id, **properties)
    return user_id


@dataclass
class OneTenantConfig:
    """What ``status.collect`` reads of a configuration, for one tenant (tests that run a pipeline directly)."""

    tenant: TenantConfig
    source: Path

    @property
    def tenants(self) -> list[TenantConfig]:
        return [self.tenant]

    @property
    def server(self) -> ServerConfig:
        return ServerConfig()
