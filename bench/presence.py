"""Teams presence at size: how long a presence change waits for the PBX, what
a poll asks of Graph, and what it writes, against the Graph simulator (in this
process) and scim2-server (its own process).

    .venv/bin/python -m bench.presence --users 10000
    .venv/bin/python -m bench.presence --users 10000 --poll-seconds 30 --polls 6
    .venv/bin/python -m bench.presence --users 10000 --write-chunk 1000   # one /Bulk a poll, to compare

After a first run (the users) and a first presence poll (everybody's presence
pushed once), each further poll follows a share of the users changing
presence (0 %, 1 %, 10 %: a quiet minute, an ordinary one, the top of the
hour), distinct users, each at a random moment of the interval before the
poll. The polls run back to back here, and the simulator's clock moves one
interval between them (its rate limit counts on that clock); a change so
waits for the next poll (``poll_seconds`` minus its moment, known exactly)
plus the measured wall time from the poll's start until the PBX answered the
request that carried that user's write (:class:`LandingTimes`, at the
writer). The wait until the whole poll ended, which an earlier version
charged every change with, is shown beside it: it was exact while every
change went in one ``/Bulk`` answered at the poll's end, and overstates the
wait once the writes go in several pipelined requests. Graph requests and
429s are the simulator's counts, PBX write requests the client's own
metrics, presence writes the run report's.

Today's scheduled-only design has no presence at all: a change never reaches
the PBX, so there is nothing to put beside these figures but that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from daemon.clock import FakeClock
from daemon.config import TenantConfig
from daemon.graph.client import GraphClient
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxOperation, PbxOutcome, PbxWriter
from daemon.retry import RetryPolicy, Transport
from daemon.sync import presence as presence_poll
from daemon.sync.presence import IDS_PER_CALL, PresenceSync
from daemon.sync.report import RunReport
from daemon.sync.tenant import build_tenant_sync
from sim.app import Simulator
from sim.graph import SimSettings
from sim.pbx import ScimServer
from sim.presence import RATE_LIMIT, RATE_WINDOW
from sim.store import SimTenant
from state.open import open_database
from state.store import Store
from state.sync_store import SyncStore

TOKEN = "bench-token"
PRESENCE_CALL = r"^/communications/getPresencesByUserId$"
WRITE_OPS = ("create", "update", "delete", "bulk")
STATES = [("Available", "Available"), ("Busy", "InACall"), ("Busy", "InAMeeting"), ("DoNotDisturb", "Presenting"),
          ("Away", "Away"), ("BeRightBack", "BeRightBack"), ("Offline", "OffWork")]
RESULTS = Path(__file__).resolve().parent / "results"


async def _tokens(*, force_refresh: bool = False) -> str:
    return TOKEN


def _tenant(tmp: Path, scim_url: str, poll_seconds: int) -> TenantConfig:
    (tmp / "pbx-token").write_text("x")
    (tmp / "pbx-token").chmod(0o600)
    return TenantConfig.model_validate({
        "name": "t", "directory_id": "11111111-2222-3333-4444-555555555555",
        "application_id": "66666666-7777-8888-9999-000000000000", "auth_mode": "application",
        "client_secret_file": "pbx-token",
        "pbx": {"scim_url": scim_url, "token_file": "pbx-token"},
        "users": {"enabled": True, "starting_extension_number": "10001"},
        "presence": {"enabled": True, "poll_seconds": poll_seconds},
    }, context={"base_dir": tmp})


def _pbx_writes(metrics: Metrics) -> int:
    return int(sum(sample.value for family in metrics.registry.collect() for sample in family.samples
                   if sample.name == "m365sync_pbx_requests_total" and sample.labels.get("op") in WRITE_OPS))


class LandingTimes:
    """The writer the poll writes through: when the PBX answered each user's write (``perf_counter``),
    taken as the client hands the outcome on, that is right after the answer of its request."""

    def __init__(self, writer: PbxWriter) -> None:
        self.writer = writer
        self.landed: dict[str, float] = {}

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        outcome = await self.writer.execute(operation)
        self.landed[operation.external_id] = time.perf_counter()
        return outcome

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        async for outcome in self.writer.execute_many(operations):
            self.landed[outcome.operation.external_id] = time.perf_counter()
            yield outcome

    async def operations_per_request(self) -> int:
        return await self.writer.operations_per_request()


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user and system) of another process so far, from ``/proc`` (0.0 where there is none):
    what the PBX spends on a poll's writes, which wall times on a busy machine do not show."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)] if ordered else 0.0


async def measure(users: int, scim: ScimServer, pbx_tenant: str, poll_seconds: int, polls: int) -> dict[str, Any]:
    """The polls' rows (see the module's docstring); ``pbx_cpu_s`` is scim2-server's CPU time during the poll,
    which, unlike the wall times, does not grow with the other work on the machine."""
    clock, rng = FakeClock(), random.Random(25)
    sim_tenant = SimTenant(clock)
    for index in range(users):  # every one an enabled member, so all of them are synced and polled
        sim_tenant.add_user(f"00000000-0000-4000-8000-{index:012d}", displayName=f"User {index}",
                            userPrincipalName=f"user{index:05d}@contoso.example", accountEnabled=True, userType="Member")
    simulator = Simulator(sim_tenant, SimSettings(), accepted_tokens={TOKEN})
    server = TestServer(simulator.app(), host="127.0.0.1")
    await server.start_server()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = await open_database(tmp / "state.db")
        store, sync_store = Store(db, clock=clock.time), SyncStore(db, clock=clock.time)
        await store.register_tenant("t", "d", "a")
        tenant = _tenant(tmp, scim.url(pbx_tenant), poll_seconds)
        try:
            async with aiohttp.ClientSession() as session:
                metrics = Metrics()
                transport = Transport(session, "t", metrics, clock=clock, retry=RetryPolicy(), rng=random.Random(1))
                graph = GraphClient(transport, str(server.make_url("")).rstrip("/"), _tokens)
                pbx = PbxClient(transport, scim.url(pbx_tenant), scim.token)
                await build_tenant_sync(tenant, store, sync_store, graph, pbx, pbx, clock.time).run()
                synced = [user_id for user_id, _, _ in await sync_store.active_users("t")]
                landing = LandingTimes(pbx)
                presence = PresenceSync(tenant, sync_store, graph, landing)
                shares = [("first poll", None)] + [(f"{share:g} % changed", share)
                                                   for share in ([0.0, 1.0, 10.0] * polls)[:polls]]
                for label, share in shares:
                    changed = rng.sample(synced, round(len(synced) * share / 100)) if share else []
                    moments = [rng.uniform(0, poll_seconds) for _ in changed]  # before the poll, seconds
                    for user_id in changed:  # to another state than the one it is in
                        current = sim_tenant.presences.get(user_id)
                        simulator.api.presence.set(user_id, *rng.choice([s for s in STATES if s != current]))
                    clock.advance(poll_seconds)
                    calls, throttled = len(simulator.requests(PRESENCE_CALL)), simulator.api.presence.throttled
                    writes = _pbx_writes(metrics)
                    report = RunReport()
                    landing.landed.clear()
                    started, cpu, pbx_cpu = time.perf_counter(), time.process_time(), process_cpu(scim.pid)
                    await presence.run(report)
                    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                    pbx_cpu = process_cpu(scim.pid) - pbx_cpu
                    waits = [poll_seconds - moment + landing.landed[user_id] - started
                             for user_id, moment in zip(changed, moments, strict=True)]
                    to_poll_end = [poll_seconds - moment + wall for moment in moments]
                    rows.append({
                        "poll": label, "changed": len(changed), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                        "pbx_cpu_s": round(pbx_cpu, 2),
                        "graph_presence_requests": len(simulator.requests(PRESENCE_CALL)) - calls,
                        "graph_429": simulator.api.presence.throttled - throttled,
                        "presence_written": report.presence.written, "pbx_write_requests": _pbx_writes(metrics) - writes,
                        "failures": len(report.failures),
                        "p50_wait_s": round(percentile(waits, 0.5), 2), "p99_wait_s": round(percentile(waits, 0.99), 2),
                        "max_wait_s": round(max(waits), 2) if waits else 0.0,
                        "p99_to_poll_end_s": round(percentile(to_poll_end, 0.99), 2),
                    })
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            await db.close()
            await server.close()
    changes = [row for row in rows if row["changed"]]
    return {
        "users": len(synced), "poll_seconds": poll_seconds, "ids_per_call": IDS_PER_CALL,
        "write_chunk": presence_poll.WRITE_CHUNK,
        "graph_limit": f"{RATE_LIMIT} per {RATE_WINDOW:g} s", "polls": rows,
        "p99_wait_s": max((row["p99_wait_s"] for row in changes), default=0.0),
        "target_s": poll_seconds + 2,
        "requests_per_30_s": max(row["graph_presence_requests"] for row in rows) * 30 / poll_seconds,
        "writes_only_for_changed": all(row["presence_written"] == row["changed"] for row in changes)
        and all(row["pbx_write_requests"] == 0 for row in rows if row["poll"] != "first poll" and not row["changed"]),
    }


def report(result: dict[str, Any], when: str, machine: str) -> str:
    lines = [
        "# Benchmark: Teams presence to the PBX",
        "",
        f"{machine}, {when}; `.venv/bin/python -m bench.presence --users {result['users']} "
        f"--poll-seconds {result['poll_seconds']}` (the method: `bench/presence.py`).",
        "",
        f"{result['users']:,} users, `presence.poll_seconds = {result['poll_seconds']}`, "
        f"{result['ids_per_call']} ids per `getPresencesByUserId`, {result['write_chunk']} PATCHes per `/Bulk`; "
        f"Graph's limit {result['graph_limit']} per app and tenant.",
        "",
        "| poll | users changed | wall s | CPU s | PBX CPU s | Graph presence requests | 429s | presence written "
        "| PBX write requests "
        "| wait p50 s | wait p99 s | wait max s | p99 to the poll's end s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["polls"]:
        lines.append(f"| {row['poll']} | {row['changed']:,} | {row['wall_s']} | {row['cpu_s']} | {row['pbx_cpu_s']} | "
                     f"{row['graph_presence_requests']} | {row['graph_429']} | {row['presence_written']:,} | "
                     f"{row['pbx_write_requests']} | {row['p50_wait_s']} | {row['p99_wait_s']} | {row['max_wait_s']} | "
                     f"{row['p99_to_poll_end_s']} |")
    verdict = "met" if result["p99_wait_s"] <= result["target_s"] else "NOT met"
    lines += [
        "",
        f"- **Freshness**: p99 from a presence change to its PBX write {result['p99_wait_s']} s against the target "
        f"`poll_seconds` + 2 = {result['target_s']} s: {verdict} (to the end of the whole poll: "
        f"{max((r['p99_to_poll_end_s'] for r in result['polls'] if r['changed']), default=0.0)} s).",
        f"- **Graph**: {result['requests_per_30_s']:g} presence requests per 30 s (limit {RATE_LIMIT}); "
        "no 429 in any poll." if not any(r["graph_429"] for r in result["polls"]) else "- **Graph**: 429s seen (see the table).",
        f"- **PBX writes only for changed users**: {'yes' if result['writes_only_for_changed'] else 'NO'} (presence "
        "written = users changed in every poll after the first; a quiet poll sends no write request).",
        "- **Today's scheduled-only design**: no presence reaches the PBX at all.",
        "",
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    if args.write_chunk:  # e.g. 1000: every change of a poll in one /Bulk, as before the writes were split
        presence_poll.WRITE_CHUNK = args.write_chunk
    with ScimServer() as scim:
        result = await measure(args.users, scim, "presence0", args.poll_seconds, args.polls)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())  # other work on the machine inflates wall times
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, load average {load}"
    (RESULTS / "presence.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "presence.md").write_text(report(result, datetime.now(UTC).strftime("%Y-%m-%d"), machine))
    print(report(result, "now", machine))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--poll-seconds", type=int, default=30)
    parser.add_argument("--polls", type=int, default=6)
    parser.add_argument("--write-chunk", type=int, default=0, help="PATCHes per /Bulk (default: the daemon's)")
    asyncio.run(main(parser.parse_args()))
