"""How the per-mailbox work of a run grows with the tenant: the first contacts
round and a no-change calendar poll, at several sizes, against the Graph
simulator (in this process) and scim2-server (its own process).

    .venv/bin/python -m bench.scans --users 1000 2000 4000
    .venv/bin/python -m bench.scans --users 10000 --latency-ms 50

``--latency-ms`` delays every Graph request of the calendar polls (a
``$batch`` once, as Graph answers it), not the first run's. After the
no-change poll an event is put 5 minutes ahead in one mailbox, the clock
moves a minute, and one more poll must put it on the PBX (``fresh``).

``no_change_run_and_poll`` counts what a run and a calendar poll with nothing
changed ask Graph, inside ``$batch``: delta links followed (one per contact
folder and one per calendar), folder listings (``contactFolders`` and
``childFolders`` pages) and the ``$batch`` requests that carried them.
``no_change_run_6_hours_later`` counts the same for a run (no poll) 6 hours
later, the default ``sync_time``'s interval: the folder lists whose refresh
fell due meanwhile are listed there. ``--nested-folders`` gives every fifth
mailbox three folders, one of them with a sub-folder (the generator's
mailboxes have only the default folder).

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


def _nest_folders(sim_tenant: SimTenant) -> None:
    """Every fifth mailbox: three top-level folders, the first with a sub-folder, a contact in each."""
    for index, user_id in enumerate(sorted(sim_tenant.folders)):
        if index % 5:
            continue
        for number in range(3):
            sim_tenant.add_folder(user_id, f"f{number}-{user_id}", f"Folder {number}")
        sim_tenant.add_folder(user_id, f"sub-{user_id}", "Suppliers", parent=f"f0-{user_id}")
        for folder in (f"f1-{user_id}", f"sub-{user_id}"):
            sim_tenant.put_contact(user_id, f"c-{folder}", folder_id=folder, displayName="Bench Contact",
                                   mobilePhone="+1 206 555 0100")


def _batch_counts(simulator: Simulator, since: int) -> dict[str, int]:
    """What the requests logged after the first ``since`` asked Graph."""
    logged = simulator.log[since:]
    items = [r.path for r in logged if r.in_batch]
    return {"batches": sum(1 for r in logged if r.path == "/$batch"), "batch_items": len(items),
            "delta_items": sum(1 for p in items if "/delta" in p),
            "folder_listings": sum(1 for p in items if p.endswith(("/contactFolders", "/childFolders")))}


async def measure(users: int, scim: ScimServer, pbx_tenant: str, latency_ms: float = 0.0,
                  nested_folders: bool = False) -> dict[str, Any]:
    clock = FakeClock()
    sim_tenant = SimTenant(clock)
    generate_tenant(sim_tenant, users=users, contacts_per_user=2, events_per_user=2, photo_fraction=0)
    if nested_folders:
        _nest_folders(sim_tenant)
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
                logged = len(simulator.log)
                run_and_poll = await timed(_no_change_run_and_poll(tenant, store, sync_store, graph, pbx(), poll, clock))
                counts = {**_batch_counts(simulator, logged), "wall_s": run_and_poll[0], "cpu_s": run_and_poll[1]}
                user_id, pbx_id = sorted((await sync_store.pbx_ids("t", "user")).items())[users // 2]
                soon = clock.now().replace(microsecond=0) + timedelta(minutes=5)
                _event_soon(sim_tenant, user_id, soon)
                clock.advance(60)
                with_event = await timed(poll.run(RunReport()))
                fresh = any(start.startswith(soon.strftime("%Y-%m-%dT%H:%M")) for start in await _busy_starts(client, pbx_id))
                logged = len(simulator.log)
                clock.advance(6 * 3600)  # the default sync_time's interval: the folder refreshes fallen due meanwhile
                later = await timed(build_tenant_sync(tenant, store, sync_store, graph, client, client, clock.time).run())
                six_hours_later = {**_batch_counts(simulator, logged), "wall_s": later[0], "cpu_s": later[1]}
        finally:
            await db.close()
            await server.close()
    return {"users": users, "graph_latency_ms": latency_ms, "nested_folders": nested_folders,
            "no_change_run_and_poll": counts, "no_change_run_6_hours_later": six_hours_later,
            "first_run_with_contacts": {"wall_s": first[0], "cpu_s": first[1]},
            "no_change_calendar_poll": {"wall_s": no_change[0], "cpu_s": no_change[1], "batches": batches,
                                        "busy_lists_pushed_by_first_poll": first_poll.busy.written},
            "poll_after_event_5_min_ahead": {"wall_s": with_event[0], "cpu_s": with_event[1], "fresh": fresh}}


async def _no_change_run_and_poll(tenant: TenantConfig, store: Store, sync_store: SyncStore, graph: GraphClient,
                                  client: PbxClient, poll: CalendarSync, clock: FakeClock) -> None:
    report = await build_tenant_sync(tenant, store, sync_store, graph, client, client, clock.time).run()
    assert report.result == "success" and not report.plan, (report.result, report.plan[:3])
    await poll.run(RunReport())


async def main(sizes: list[int], latency_ms: float, nested_folders: bool) -> None:
    with ScimServer() as scim:
        for index, users in enumerate(sizes):
            print(json.dumps(await measure(users, scim, f"bench{index}", latency_ms, nested_folders)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="Graph latency per request, for the polls")
    parser.add_argument("--nested-folders", action="store_true", help="every fifth mailbox: 3 folders and a sub-folder")
    args = parser.parse_args()
    asyncio.run(main(args.users, args.latency_ms, args.nested_folders))
