"""Freshness with change notifications: the time from a change in Graph to
the end of the run that wrote it to the PBX, at N users (default 10,000),
the simulator notifying at once (``auto_deliver``).

One daemon (in this process, real clock) against the fake world: the Graph
simulator, the fake Entra, scim2-server as the PBX. After the start-up run
and its subscriptions, each trial makes one change (a new user, a leaver, a
group membership) and waits for the notified run to finish; the figure is
that run's end minus the change's time, so it includes the delivery, the
endpoint, the one-second debounce and the whole run (an upper bound of the
PBX write's time). The scheduled-only design is computed, not measured: a
change waits for the next ``sync_time`` (every 6 hours in the guide).

    .venv/bin/python -m bench.freshness --users 10000 --trials 20
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.config import load_config
from daemon.service import Service
from sim.pbx import ScimServer
from sim.world import FakeWorld

TENANT = "contoso"
SCHEDULE_HOURS = 6.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


async def _notified_runs(service: Service) -> list[tuple[str, float | None]]:
    return [(r.id, r.finished_at) for r in await service.store.recent_runs(TENANT, 200) if r.trigger == "notification"]


async def _wait_for_read(service: Service, known: set[str], limit: float = 120.0) -> float:
    """The end of the first notified run not in ``known`` (polls the state every 20 ms)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for run_id, finished in await _notified_runs(service):
            if run_id not in known and finished is not None:
                known.add(run_id)
                return finished
        await asyncio.sleep(0.02)
    raise TimeoutError("no notified run finished")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="m365sync-freshness-") as tmp, ScimServer() as scim:
        world = FakeWorld(Path(tmp), users=args.users, scim=scim, sync_photo=False)
        await world.start()
        assert world.sim is not None and world.config_path is not None and world.made is not None
        groups = world.made.groups[:3]
        text = world.config_path.read_text()
        port = re.search(r'^listen = "127\.0\.0\.1:(\d+)"', text, re.M).group(1)  # type: ignore[union-attr]
        text = text.replace("[server]\n", f'[server]\npublic_url = "http://127.0.0.1:{port}"\n', 1)
        text = text.replace('sync_time = "0 */6 * * *"\n', 'sync_time = "0 */6 * * *"\ngroups = [' +
                            ", ".join(f'"{g}"' for g in groups) + "]\n")
        world.config_path.write_text(text)
        world.sim.subscriptions.auto_deliver = True
        service = Service(load_config(world.config_path), environ={})
        started = time.monotonic()
        await service.start()
        known: set[str] = set()
        try:
            while {s.resource for s in world.sim.subscriptions.subscriptions.values()} != {"users", "groups"}:
                await asyncio.sleep(0.2)
            setup_s = time.monotonic() - started
            results: dict[str, list[float]] = {"new user": [], "leaver": [], "group membership": []}
            members = list(world.made.members)
            for trial in range(args.trials):
                for kind in results:
                    changed_at = time.time()
                    if kind == "new user":
                        world.tenant.add_user(f"bench-hire-{trial}", displayName=f"Hire {trial}",
                                              userPrincipalName=f"hire{trial}@contoso.example", accountEnabled=True,
                                              userType="Member", mail=f"hire{trial}@contoso.example")
                    elif kind == "leaver":
                        world.tenant.soft_delete_user(members[-1 - trial])
                    else:
                        group = groups[trial % len(groups)]
                        outsider = next(m for m in members if m not in world.tenant.members[group].current)
                        world.tenant.add_member(group, outsider)
                    results[kind].append(await _wait_for_read(service, known) - changed_at)
        finally:
            await service.stop()
            await world.stop()
    return {"users": args.users, "trials": args.trials, "setup_s": round(setup_s, 1),
            "seconds": {k: sorted(round(v, 3) for v in values) for k, values in results.items()}}


def report(result: dict[str, Any]) -> str:
    lines = [f"# Freshness with change notifications at {result['users']:,} users", "",
             f"Machine: {platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
             f"{result['trials']} trials per change, one at a time; the simulator notifies at once. "
             f"Start-up run and subscriptions: {result['setup_s']} s. Figures: seconds from the change in Graph to "
             "the end of the notified run that wrote it (delivery, endpoint, 1 s debounce, the run).", "",
             "| change | p50 s | p99 s | max s | scheduled-only p99 (sync_time every 6 h, computed) |",
             "|---|---|---|---|---|"]
    for kind, values in result["seconds"].items():
        lines.append(f"| {kind} | {percentile(values, 0.5):.2f} | {percentile(values, 0.99):.2f} | {max(values):.2f} "
                     f"| {0.99 * SCHEDULE_HOURS * 3600:,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "freshness.md")
    outcome = asyncio.run(main(parser.parse_args()))
    text = report(outcome)
    parser.parse_args().out.write_text(text)
    print(text)
