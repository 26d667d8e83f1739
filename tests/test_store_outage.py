"""A PostgreSQL outage never leaves a run ``running`` or its lock held: the
server is stopped mid-run (from the k-th PBX write, through the proxy's hook)
or while the daemon is idle; once it is back, the interrupted run's result is
recorded, the lock is free, the next run completes and the PBX is whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from conftest import until, write_secret
from daemon.config import load_config
from daemon.scheduler import RunProgress
from daemon.service import Service
from daemon.sync.kinds import RUN_KINDS, SyncRequest
from live_fixtures import LiveEnv
from pg_fixtures import running_server
from sim.generator import generate_tenant
from sim.postgres import PostgresServer

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and started again."""
    yield from running_server()


@dataclass
class OutageEnv:
    live: LiveEnv
    service: Service
    pg: PostgresServer
    runs: int = 0

    async def run(self) -> tuple[str, str]:
        """One run through the daemon's own path, once it owns the tenant; (its id, its result)."""
        async def owns() -> bool:
            return self.service.supervisor.ownership.holds("contoso")

        await until(owns, 30, "the daemon to own the tenant")
        self.runs += 1
        run_id = f"run{self.runs}"
        request = SyncRequest("contoso", RUN_KINDS, "test")
        return run_id, await self.service.supervisor.sync_now(request, run_id, RunProgress(run_id, "test"))

    async def open_runs_and_locks(self) -> tuple[int, int]:
        """Runs left without a result, and run locks held, read straight from the server."""
        conn = await asyncpg.connect(self.pg.url("state"))
        try:
            running = await conn.fetchval("SELECT count(*) FROM runs WHERE finished_at IS NULL")
            locks = await conn.fetchval("SELECT count(*) FROM run_leases")
        finally:
            await conn.close()
        return int(running), int(locks)

    def stop_after_writes(self, count: int) -> None:
        """Stop PostgreSQL as soon as the PBX has answered the count-th write."""
        writes = 0

        def hook(method: str, path: str, body: bytes) -> bytes:
            nonlocal writes
            if method in WRITES:
                writes += 1
                if writes == count:
                    self.pg.halt()
            return body

        self.live.proxy.rewrite = hook


@pytest.fixture
async def outage(live_env: LiveEnv, own_postgres: PostgresServer) -> AsyncIterator[OutageEnv]:
    url = own_postgres.create_database("state")
    write_secret(live_env.tmp_path / "state-key", "one-key-for-the-outage-test-state-0123456789")
    text = live_env.config.read_text().replace(
        '[state]\npath = "state.db"',
        f'[state]\nurl = "{url}"\nencryption_key_file = "state-key"\nlease_seconds = 5\ninstance_name = "one"')
    assert f'url = "{url}"' in text
    live_env.config.write_text(text)
    service = Service(load_config(live_env.config), environ={}, schedule=False)
    await service.start()
    try:
        yield OutageEnv(live_env, service, own_postgres)
    finally:
        await service.stop()


async def test_postgresql_stopped_mid_run_then_back(outage: OutageEnv) -> None:
    generate_tenant(outage.live.tenant, users=30, photo_fraction=0)
    outage.stop_after_writes(10)
    first, result = await outage.run()
    assert result in ("failed", "lease_lost")  # whichever state read or write came first after the stop
    assert outage.service.supervisor.backlogs["contoso"].runs  # kept: the store could not take it
    outage.live.proxy.rewrite = None
    outage.pg.resume()
    second, again = await outage.run()
    assert again == "success"
    interrupted = await outage.service.store.run(first)
    assert interrupted is not None and interrupted.finished_at is not None and interrupted.result == result
    assert interrupted.summary["counts"] == {"user": {"create": 10}}  # the writes it applied
    assert await outage.open_runs_and_locks() == (0, 0)
    done = await outage.service.store.run(second)
    assert done is not None  # the 10 applied but unrecorded are adopted, the rest created: 26 of 30 are in scope
    assert done.summary["counts"] == {"user": {"create": 16, "update": 10}}
    users = await outage.live.pbx_users()  # no duplicate externalId or number (checked inside)
    assert len(users) == 26


async def test_postgresql_stopped_while_idle(outage: OutageEnv) -> None:
    generate_tenant(outage.live.tenant, users=8, photo_fraction=0)
    assert (await outage.run())[1] == "success"
    before = len(await outage.live.pbx_users())
    outage.pg.halt()

    async def lost() -> bool:  # the lease session saw the server go: writing stops until it is back
        return not outage.service.supervisor.ownership.holds("contoso")

    await until(lost, 30, "the daemon to notice the outage")
    outage.pg.resume()  # run() waits for the lease to be taken again
    outage.live.tenant.add_user("00000000-0000-4000-9000-000000000001", displayName="New Hire",
                                userPrincipalName="hire@contoso.example", accountEnabled=True, userType="Member")
    run_id, result = await outage.run()
    assert result == "success"
    assert await outage.open_runs_and_locks() == (0, 0)
    assert len(await outage.live.pbx_users()) == before + 1


async def test_a_run_left_running_by_a_dead_process_is_closed_as_interrupted(outage: OutageEnv) -> None:
    generate_tenant(outage.live.tenant, users=3, photo_fraction=0)
    await outage.service.store.start_run("dead", "contoso", "schedule")  # its process died before recording it
    assert (await outage.run())[1] == "success"
    dead = await outage.service.store.run("dead")
    assert dead is not None and dead.result == "interrupted" and dead.finished_at is not None
    assert dead.error is not None and "ended before recording its result" in dead.error
    assert await outage.open_runs_and_locks() == (0, 0)
