"""A running daemon whose Graph (the simulator) sends change notifications:
the daemon's ``public_url`` is its own loopback http address, which the
simulator accepts for loopback hosts only (``sim/subscriptions.py``: Graph
itself requires https; the tests so need no TLS server of the daemon's).
One ManualClock drives the daemon and the simulated tenant, so subscription
lifetimes, renewals and the debounce window move only when a test says so."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import HANG_GUARD, until
from daemon.clock import ManualClock
from daemon.config import load_config
from daemon.service import Service
from scenario import build, config_toml
from sim.pbx import ScimServer
from sim.store import SimTenant
from sim.subscriptions import SubscriptionsApi
from sim.world import FakeWorld
from state.store import RunRow

TENANT = "contoso"


@dataclass
class Notified:
    world: FakeWorld
    service: Service
    clock: ManualClock

    @property
    def graph(self) -> SubscriptionsApi:
        assert self.world.sim is not None
        return self.world.sim.subscriptions

    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.bound_port}"

    async def runs(self, trigger: str | None = None) -> list[RunRow]:
        rows = await self.service.store.recent_runs(TENANT, 100)
        return [r for r in rows if trigger is None or r.trigger == trigger]

    async def finished_runs(self, trigger: str) -> int:
        return sum(1 for r in await self.runs(trigger) if r.finished_at is not None)

    def resource_ids(self) -> dict[str, str]:
        """resource -> subscription id, as the simulator holds them."""
        return {s.resource: s.id for s in self.graph.subscriptions.values()}

    async def settle_window(self) -> None:
        """Let the debounce window pass (the debouncer sleeps on the ManualClock)."""
        await self.clock.settle()
        await self.clock.advance_async(1.0)
        await self.clock.settle()


def with_public_url(path: Path, public_url: str | None = None) -> Path:
    text = path.read_text()
    port = re.search(r'^listen = "127\.0\.0\.1:(\d+)"', text, re.M).group(1)  # type: ignore[union-attr]
    url = public_url or f"http://127.0.0.1:{port}"
    path.write_text(text.replace("[server]\n", f'[server]\npublic_url = "{url}"\n', 1))
    return path


async def start_notified(folder: Path, scim: ScimServer, public_url: str | None = None, sections: str = "") -> Notified:
    clock = ManualClock()
    tenant = SimTenant(clock)
    build(tenant, users=6, contacts_per_user=1, contact_owners=2)
    settings, more = config_toml()
    world = await FakeWorld(folder, users=0, scim=scim, sync_photo=False, tenant=tenant,
                            tenant_settings=settings, tenant_sections=more + sections).start()
    assert world.config_path is not None
    service = Service(load_config(with_public_url(world.config_path, public_url)), environ={}, clock=clock)
    await service.start()
    setup = Notified(world, service, clock)

    async def first_run_done() -> bool:
        await clock.settle()
        return await setup.finished_runs("startup") == 1

    await until(first_run_done, HANG_GUARD, "the start-up run")
    return setup


@pytest.fixture
async def notified(tmp_path: Path, scim_server_one_by_one: ScimServer) -> AsyncIterator[Notified]:
    setup = await start_notified(tmp_path / "world", scim_server_one_by_one)

    async def subscribed() -> bool:
        await setup.clock.settle()
        return len(setup.graph.subscriptions) >= 2 + 6  # users, groups, and each mailbox's contacts

    try:
        await until(subscribed, HANG_GUARD, "the subscriptions the first run asks for")
        yield setup
    finally:
        await setup.service.stop()
        await setup.world.stop()
