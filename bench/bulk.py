"""The initial run against the PBX: how many write requests, and whether the
daemon's and the PBX's work overlap (issue 24's /Bulk targets).

    python -m bench.bulk                         # 10k users, 3 repetitions, 0 and 50 ms before the PBX
    python -m bench.bulk --users 5000 --repeat 1 --latency-ms 0
    python -m bench.bulk --repeat 1 --latency-ms 0 --timeline   # and when each step happened

Each repetition starts a fresh scim2-server (so the PBX's work does not grow
with earlier repetitions' objects) behind a proxy that adds ``--latency-ms``
to every PBX request, and a fresh fake world; the daemon's initial run
(``sync --once``) is its own process, measured by ``bench/measure.py``. The
PBX's CPU is read from ``/proc/<pid>/stat`` before and after the run; its
write requests from its access log. Prints one JSON line per run and, at the
end, the medians per latency (``--out FILE`` also writes them as JSON).
``--timeline`` adds each run's marks (``bench/bulk_timeline.py``); the run then logs at
``info``, so compare its CPU figures only with other ``--timeline`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.bulk_timeline import PbxRequest, logged, timeline
from bench.measure import child_env
from bench.run import measured
from sim.pbx import ScimServer
from sim.world import FakeWorld, free_port

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@asynccontextmanager
async def latency_proxy(target: str, latency_s: float, seen: list[PbxRequest] | None = None) -> AsyncIterator[str]:
    """A proxy before ``target`` (a SCIM base URL ending in /v2) that waits ``latency_s`` before each
    request; each request's times go to ``seen``."""
    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.StreamResponse:
        received = time.time()
        body = await request.read()
        await asyncio.sleep(latency_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}  # Host too: /Bulk locations name the proxy
        async with session.request(request.method, target + request.path_qs.split("/v2", 1)[1], data=body,
                                   headers=headers) as answer:
            payload = await answer.read()
            if seen is not None:
                seen.append(PbxRequest(request.method, request.path, received, time.time()))
            return web.Response(status=answer.status, body=payload, headers={
                k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "etag", "location")})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v2"
    finally:
        await runner.cleanup()
        await session.close()


async def initial_run(users: int, latency_ms: float, with_timeline: bool = False) -> dict[str, Any]:
    seen: list[PbxRequest] = []
    with ScimServer() as scim, tempfile.TemporaryDirectory(prefix="m365sync-bulk-") as tmp:
        assert scim._process is not None
        pid = scim._process.pid
        async with latency_proxy(scim.url("bulk"), latency_ms / 1000, seen) as url:
            world = FakeWorld(Path(tmp), users=users, scim=scim, pbx_tenant="bulk", pbx_url=url, sync_photo=False)
            await world.start()
            assert world.config_path is not None and world.made is not None and world.sim is not None
            if with_timeline:  # the plan's time comes from its log line
                config = world.config_path.read_text()
                world.config_path.write_text(config.replace('level = "warning"', 'level = "info"')
                                             .replace('format = "console"', 'format = "json"'))
            graph_before = len(world.sim.log)
            try:
                cpu_before = process_cpu_s(pid)
                started = time.time()
                result = await measured(["daemon.cli", "sync", "--once", "--config", str(world.config_path)],
                                        child_env(), keep_output=with_timeline)
                exited = time.time()
                log = await asyncio.to_thread(scim.settled_requests, "bulk")
                result["pbx_cpu_s"] = round(process_cpu_s(pid) - cpu_before, 3)
                if with_timeline:
                    graph = [(r.path, r.at) for r in world.sim.log[graph_before:]]
                    result["timeline"] = timeline(started, exited, graph, seen, logged(result.pop("output")),
                                                  latency_ms / 1000)
            finally:
                await world.stop()
        writes = [r for r in log if r.method != "GET"]
        result.update(users=users, latency_ms=latency_ms, pbx_write_requests=len(writes),
                      pbx_reads=len(log) - len(writes), created=len(world.made.members))
        return result


def summary(runs: list[dict[str, Any]], max_operations: int) -> dict[str, Any]:
    """Medians of one latency's runs, and the targets' figures."""
    def median(key: str) -> float:
        return round(float(statistics.median(r[key] for r in runs)), 3)

    wall, cpu, pbx_cpu = median("wall_s"), median("cpu_s"), median("pbx_cpu_s")
    writes = runs[0]["created"]
    return {"latency_ms": runs[0]["latency_ms"], "runs": len(runs), "wall_s": wall, "daemon_cpu_s": cpu,
            "pbx_cpu_s": pbx_cpu, "wall_over_max_cpu": round(wall / max(cpu, pbx_cpu), 2),
            "pbx_write_requests": median("pbx_write_requests"),
            "request_bound": math.ceil(writes / max_operations) + 2, "writes": writes}


async def main(args: argparse.Namespace) -> None:
    runs: dict[float, list[dict[str, Any]]] = {latency: [] for latency in args.latency_ms}
    for _ in range(args.repeat):
        for latency in args.latency_ms:
            result = await initial_run(args.users, latency, args.timeline)
            result["loadavg"] = os.getloadavg()
            print(json.dumps(result), flush=True)
            runs[latency].append(result)
    medians = [summary(r, args.max_operations) for r in runs.values()]
    for line in medians:
        print(json.dumps(line), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "medians": medians}, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0],
                        help="latency added before each PBX request")
    parser.add_argument("--max-operations", type=int, default=1000, help="the PBX's bulk.maxOperations (for the bound)")
    parser.add_argument("--timeline", action="store_true", help="record when each step of the run happened")
    parser.add_argument("--out", help="write the runs and medians here as JSON")
    asyncio.run(main(parser.parse_args()))
