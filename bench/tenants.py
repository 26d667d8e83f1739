"""Many tenants in one daemon: how late hourly runs start, and what one hung
tenant does to the others.

    .venv/bin/python -m bench.tenants                        # 500 tenants of 200 users
    .venv/bin/python -m bench.tenants --tenants 50 --users 50

The daemon runs in this process (its CPU and RSS are this process's, less the
fake Entra's few token requests); the Graph simulator (``python -m sim``) and
scim2-server (one SCIM tenant per PBX tenant) are processes of their own.
Every tenant syncs hourly (``0 * * * *``) with ``[runs] max_concurrent``
places. The clock is the real one plus an offset, moved to a second before
the hour between rounds (no run is in flight then), so an hour does not take
an hour.

Rounds: the start-up runs (each tenant's first sync); an hourly round with
no change; then an hourly round while tenant 0's Graph hangs (a simulator of
its own, restarted with an hour of latency). Reported per round: lateness of
each scheduled run (due to started, waiting for a place included) as p50 and
p99, the round's wall and CPU time, and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measure import peak_rss_mb
from daemon.config import load_config
from daemon.logging import configure_logging
from daemon.service import Service
from sim.pbx import ScimServer
from sim.world import FakeWorld, free_port

RESULTS = Path(__file__).resolve().parent / "results"


class JumpClock:
    """The real clock plus an offset that :meth:`jump_to` moves; sleepers wake to look again."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._jumped = asyncio.Event()

    def time(self) -> float:
        return time.time() + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        deadline = self.time() + seconds
        while (remaining := deadline - self.time()) > 0:
            jumped = self._jumped
            try:
                await asyncio.wait_for(jumped.wait(), remaining)
            except TimeoutError:
                pass

    def jump_to(self, moment: float) -> None:
        self.offset = moment - time.time()
        jumped, self._jumped = self._jumped, asyncio.Event()
        jumped.set()


def graph_simulator(port: int, users: int, latency_ms: float = 0.0, *, contacts: int = 0,
                    groups: int = 0) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sim", "--users", str(users), "--contacts", str(contacts), "--events", "0",
         "--groups", str(groups),
         "--port", str(port), "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    process.stdout.readline()  # "simulated tenant: ..." once it is generated; then it listens
    return process


def config_text(world: FakeWorld, tenants: int, graph_ports: tuple[int, int], scim: ScimServer, concurrency: int) -> str:
    assert world.config_path is not None
    text = world.config_path.read_text()
    head, _, tenant_part = text.partition("[[tenants]]")
    head = head.replace('level = "warning"', 'level = "error"')
    blocks = []
    for index in range(tenants):
        block = "[[tenants]]" + tenant_part
        block = block.replace('name = "contoso"', f'name = "t{index:03d}"')
        block = block.replace('sync_time = "0 */6 * * *"', 'sync_time = "0 * * * *"')
        graph = graph_ports[0] if index == 0 else graph_ports[1]
        block = _replace_line(block, "graph_url", f'graph_url = "http://127.0.0.1:{graph}"')
        block = _replace_line(block, "scim_url", f'scim_url = "{scim.url(f"bench{index:03d}")}"')
        blocks.append(block)
    return head + f"[runs]\nmax_concurrent = {concurrency}\ntimeout_minutes = 30\n\n" + "\n".join(blocks)


def _replace_line(text: str, key: str, line: str) -> str:
    return "\n".join(line if row.startswith(f"{key} = ") else row for row in text.splitlines()) + "\n"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3) if ordered else 0.0


async def scheduled_round(service: Service, clock: JumpClock, hour: float, skip: set[str]) -> dict[str, Any]:
    """Move to a second before ``hour``; wait until every tenant but ``skip`` ran at ``hour``."""
    clock.jump_to(hour - 1)
    cpu = time.process_time()
    while True:
        runs = {name: next((r for r in s.recent.values() if r.due_at == hour), None)
                for name, s in service.supervisor.schedules.items() if name not in skip}
        if all(r is not None and r.state == "finished" for r in runs.values()):
            break
        await asyncio.sleep(0.2)
    lateness = [r.lateness or 0.0 for r in runs.values() if r is not None]
    results: dict[str, int] = {}
    for run in runs.values():
        assert run is not None
        results[str(run.result)] = results.get(str(run.result), 0) + 1
    return {"runs": len(lateness), "results": results, "lateness_p50_s": percentile(lateness, 0.5),
            "lateness_p99_s": percentile(lateness, 0.99), "lateness_max_s": round(max(lateness), 3),
            "wall_s": round(clock.time() - hour, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "peak_rss_mb": peak_rss_mb()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("error", "console")
    with tempfile.TemporaryDirectory(prefix="m365sync-tenants-") as tmp, ScimServer() as scim:
        ports = (free_port(), free_port())
        sims = [graph_simulator(ports[0], args.users), graph_simulator(ports[1], args.users)]
        world = await FakeWorld(Path(tmp), users=0, scim=scim, sync_photo=False).start()
        try:
            config = Path(tmp) / "config.toml"
            config.write_text(config_text(world, args.tenants, ports, scim, args.concurrency))
            clock = JumpClock()
            service = Service(load_config(config), environ={}, clock=clock)
            wall, cpu = time.perf_counter(), time.process_time()
            await service.start()
            while not all(s.recent and s.current is None and s.queued is None for s in service.supervisor.schedules.values()):
                await asyncio.sleep(0.5)
            startup = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
                       "results": _results(service), "peak_rss_mb": peak_rss_mb()}
            print(f"start-up runs: {startup}", flush=True)
            hour = (clock.time() // 3600 + 1) * 3600
            quiet = await scheduled_round(service, clock, hour, set())
            print(f"hourly, no change: {quiet}", flush=True)
            sims[0].terminate()
            sims[0].wait()
            sims[0] = graph_simulator(ports[0], args.users, latency_ms=3600 * 1000)  # tenant 0's Graph hangs
            hung = await scheduled_round(service, clock, hour + 3600, {"t000"})
            hung["hung_tenant"] = "t000 (Graph answers after an hour; it holds one place until its time limit)"
            print(f"hourly, one tenant hung: {hung}", flush=True)
            await service.stop()
        finally:
            for process in sims:
                process.terminate()
                process.wait()
            await world.stop()
    return {"tenants": args.tenants, "users_per_tenant": args.users, "max_concurrent": args.concurrency,
            "startup": startup, "hourly_no_change": quiet, "hourly_one_hung": hung}


def _results(service: Service) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schedule in service.supervisor.schedules.values():
        for run in schedule.recent.values():
            counts[str(run.result)] = counts.get(str(run.result), 0) + 1
    return counts


def report(result: dict[str, Any]) -> str:
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    rows = ["| round | runs | results | lateness p50 s | p99 s | max s | wall s | daemon CPU s | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for key, label in (("hourly_no_change", "hourly, no change"), ("hourly_one_hung", "hourly, tenant 0's Graph hung")):
        r = result[key]
        rows.append(f"| {label} | {r['runs']} | {r['results']} | {r['lateness_p50_s']} | {r['lateness_p99_s']} | "
                    f"{r['lateness_max_s']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']:.0f} |")
    s = result["startup"]
    return (f"# {result['tenants']} tenants of {result['users_per_tenant']} users in one daemon\n\n"
            f"Machine: {machine}. `python -m bench.tenants`; `[runs] max_concurrent = {result['max_concurrent']}`, "
            "SQLite state, hourly schedules (`0 * * * *`).\n\n"
            f"Start-up (every tenant's first sync, {result['tenants'] * result['users_per_tenant']:,} users): "
            f"{s['wall_s']} s wall, {s['cpu_s']} s daemon CPU, peak RSS {s['peak_rss_mb']:.0f} MB, results "
            f"{s['results']}.\n\n" + "\n".join(rows) + "\n\nLateness is from the crontab's time to the run's start, "
            "the wait for one of the places included. With tenant 0 hung (it holds one place until its 30-minute "
            "limit), the other tenants share the remaining places.\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.tenants", description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8, help="[runs] max_concurrent")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results/tenants.*")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    text = report(outcome)
    print(text)
    if not arguments.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tenants.json").write_text(json.dumps(outcome, indent=1) + "\n")
        (RESULTS / "tenants.md").write_text(text)
