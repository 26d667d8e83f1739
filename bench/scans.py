"""How the per-mailbox work of a run grows with the tenant: the first contacts
round and a no-change calendar poll, at several sizes, against the Graph
simulator (in this process) and scim2-server (its own process).

    .venv/bin/python -m bench.scans --users 1000 2000 4000
    .venv/bin/python -m bench.scans --users 10000 --latency-ms 50

``--latency-ms`` delays every Graph request of the calendar polls (a
``$batch`` once, as Graph answers it), not the first run's. After the
no-change poll an event is put 5 minutes ahead in one mailbox, the clock
moves a minute, and one more poll must put it on the PBX (``fresh``).

Reports wall time and this process's CPU time (the daemon's code and the
simulator's, which answers in-process). Linear growth is the target: the
first version grew with the square of the tenant (an unindexed scan per
mailbox), e.g. a no-change poll took 3.5 s CPU at 1k users, 16 s at 2k and
65 s at 4k.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from daemon.clock import FakeClock
from daemon.config import TenantConfig
from daemon.graph.client import GraphClient
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import PBX_USER
from daemon.retry import RetryPolicy, Transport
from daemon.sync.calendar import CalendarSync
from daemon.sync.report import RunReport
from daemon.sync.tenant import build_tenant_sync
from sim.app import Simulator
from sim.generator import generate_tenant
from sim.graph import SimSettings
from sim.pbx import ScimServer
from sim.store import SimTenant
from state.open import open_database
from state.store import Store
from state.sync_store import SyncStore

TOKEN = "bench-token"


async def _tokens(*, force_refresh: bool = False) -> str:
    return TOKEN


def _tenant(tmp: Path, scim_url: str) -> TenantConfig:
    (tmp / "pbx-token").write_text("x")
    (tmp / "pbx-token").chmod(0o600)
    return TenantConfig.model_validate({
        "name": "t", "directory_id": "11111111-2222-3333-4444-555555555555",
        "application_id": "66666666-7777-8888-9999-000000000000",
        "pbx": {"scim_url": scim_url, "token_file": "pbx-token"},
        "users": {"enabled": True, "starting_extension_number": "1001"},
        "personal_contacts": {"enabled": True, "require_phone": False}, "events": {"enabled": True},
    }, context={"base_dir": tmp})


def _event_soon(sim_tenant: SimTenant, user_id: str, start: datetime) -> None:
    end = start + timedelta(minutes=30)
    sim_tenant.put_event(user_id, "bench-soon", subject="Bench", showAs="busy", isCancelled=False, isAllDay=False,
                         sensitivity="normal", start={"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
                         end={"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"})


async def _busy_starts(pbx: PbxClient, pbx_id: str) -> list[str]:
    found = await pbx.get("User", pbx_id)
    return [str(b.get("start")) for b in (found.data.get(PBX_USER, {}).get("busy", []) if found else [])]


async def measure(users: int, scim: ScimServer, pbx_tenant: str, latency_ms: float = 0.0) -> dict[str, Any]:
    clock = FakeClock()
    sim_tenant = SimTenant(clock)
    generate_tenant(sim_tenant, users=users, contacts_per_user=2, events_per_user=2, photo_fraction=0)
    simulator = Simulator(sim_tenant, SimSettings(), accepted_tokens={TOKEN})
    server = TestServer(simulator.app(), host="127.0.0.1")
    await server.start_server()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = await open_database(tmp / "state.db")
        store, sync_store = Store(db, clock=clock.time), SyncStore(db, clock=clock.time)
        await store.register_tenant("t", "d", "a")
        tenant = _tenant(tmp, scim.url(pbx_tenant))
        try:
            async with aiohttp.ClientSession() as session:
                transport = Transport(session, "t", Metrics(), clock=clock, retry=RetryPolicy(), rng=random.Random(1))
                graph = GraphClient(transport, str(server.make_url("")).rstrip("/"), _tokens)

                def pbx() -> PbxClient:
                    return PbxClient(transport, scim.url(pbx_tenant), scim.token)

                async def timed(step: Any) -> tuple[float, float]:
                    wall, cpu = time.perf_counter(), time.process_time()
                    await step
                    return round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)

                client = pbx()
                first = await timed(build_tenant_sync(tenant, store, sync_store, graph, client, client, clock.time).run())
                simulator.faults.latency = latency_ms / 1000
                poll = CalendarSync(tenant, store, sync_store, graph, pbx(), clock.time)
                first_poll = RunReport()
                await poll.run(first_poll)
                batches = len(simulator.requests(r"^/\$batch$"))
                no_change = await timed(poll.run(RunReport()))
                batches = len(simulator.requests(r"^/\$batch$")) - batches
                user_id, pbx_id = sorted((await sync_store.pbx_ids("t", "user")).items())[users // 2]
                soon = clock.now().replace(microsecond=0) + timedelta(minutes=5)
                _event_soon(sim_tenant, user_id, soon)
                clock.advance(60)
                with_event = await timed(poll.run(RunReport()))
                fresh = any(start.startswith(soon.strftime("%Y-%m-%dT%H:%M")) for start in await _busy_starts(client, pbx_id))
        finally:
            await db.close()
            await server.close()
    return {"users": users, "graph_latency_ms": latency_ms,
            "first_run_with_contacts": {"wall_s": first[0], "cpu_s": first[1]},
            "no_change_calendar_poll": {"wall_s": no_change[0], "cpu_s": no_change[1], "batches": batches,
                                        "busy_lists_pushed_by_first_poll": first_poll.busy.written},
            "poll_after_event_5_min_ahead": {"wall_s": with_event[0], "cpu_s": with_event[1], "fresh": fresh}}


async def main(sizes: list[int], latency_ms: float) -> None:
    with ScimServer() as scim:
        for index, users in enumerate(sizes):
            print(json.dumps(await measure(users, scim, f"bench{index}", latency_ms)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="Graph latency per request, for the polls")
    args = parser.parse_args()
    asyncio.run(main(args.users, args.latency_ms))
