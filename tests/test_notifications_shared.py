"""Two daemons on one PostgreSQL state behind one public address: a change
notification that the load balancer hands to the daemon that does not own
the tenant is persisted there, and the owner reads it."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from conftest import HANG_GUARD, until
from daemon.config import load_config
from daemon.service import Service
from sim.pbx import ScimServer
from sim.world import FakeWorld, free_port
from test_shared_state import config as shared_config


async def test_a_notification_received_by_the_non_owner_is_read_by_the_owner(
        tmp_path: Path, scim_server_one_by_one: ScimServer, pg_url: str) -> None:
    world = await FakeWorld(tmp_path / "world", users=6, scim=scim_server_one_by_one, sync_photo=False).start()
    ports = {"a": free_port(), "b": free_port()}
    public_url = f"http://127.0.0.1:{ports['a']}"  # Graph validates through daemon a; either answers
    services: dict[str, Service] = {}
    try:
        for name, port in ports.items():
            path = shared_config(tmp_path / name, world, port=port, lb=public_url, pg_url=pg_url, instance=name,
                                 delegated=False)
            services[name] = Service(load_config(path), environ={})
            await services[name].start()
        assert world.sim is not None and world.made is not None
        graph = world.sim.subscriptions

        async def subscribed() -> bool:
            return sum(s.supervisor.ownership.holds("contoso") for s in services.values()) == 1 and any(
                s.resource == "users" for s in graph.subscriptions.values())

        await until(subscribed, HANG_GUARD, "one owner, and its users subscription")
        owner = next(s for s in services.values() if s.supervisor.ownership.holds("contoso"))
        other = next(s for s in services.values() if s is not owner)
        before = sum(1 for r in await owner.store.recent_runs("contoso", 50) if r.trigger == "notification")

        world.tenant.change_user(world.made.members[0], displayName="Told The Other Daemon")
        for delivery in graph.pending:  # the load balancer picked the daemon that does not own the tenant
            delivery.url = delivery.url.replace(public_url, f"http://127.0.0.1:{other.bound_port}")
        assert {d.status for d in await graph.deliver()} == {202}

        async def read_by_owner() -> bool:
            runs = [r for r in await owner.store.recent_runs("contoso", 50) if r.trigger == "notification"]
            return len(runs) > before and all(r.finished_at is not None for r in runs)

        await until(read_by_owner, HANG_GUARD, "the owner's notified read")
        labels = {"tenant": "contoso", "kind": "user", "trigger": "notification"}

        async def observed() -> bool:  # once the owner's reader has the run's result back
            return owner.metrics.registry.get_sample_value("m365sync_freshness_seconds_count", labels) == 1

        await until(observed, HANG_GUARD, "the owner's freshness observation")
        assert other.metrics.registry.get_sample_value("m365sync_freshness_seconds_count", labels) is None
        assert other.metrics.registry.get_sample_value(
            "m365sync_notifications_received_total", {"tenant": "contoso", "kind": "user"}) == 1
        assert world.pbx is not None
        async with aiohttp.ClientSession() as session, session.get(
                f"{world.pbx.url('shared')}/Users?count=100", headers={"Authorization": f"Bearer {world.pbx.token}"}
        ) as answer:
            names = {r.get("displayName") for r in (await answer.json(content_type=None))["Resources"]}
        assert "Told The Other Daemon" in names
    finally:
        for service in services.values():
            await service.stop()
        await world.stop()
