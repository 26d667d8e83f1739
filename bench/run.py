"""The side-by-side benchmark: the daemon against the naive baseline
(``bench/baseline.py``), on the same fake world.

    make bench                          # 1k and 10k users
    make bench ARGS="--users 100000"    # opt-in sizes
    make bench ARGS="--users 1000 --latency-ms 50 --photos"

For each size: the Graph simulator (in this process) with a generated
tenant, scim2-server as the PBX (one SCIM tenant for the daemon, one for the
baseline), then three runs of each, one after the other: the initial run, a
run with no change, and a run after 1 % of the users changed. Each run is
its own process, measured by ``bench/measure.py`` (wall, CPU, peak RSS: the
simulator's and the PBX's work are not in them); Graph requests are counted
by the simulator (by kind), PBX reads and writes by scim2-server's log.
Results go to ``bench/results/`` as JSON, a markdown table (each figure also
as a ratio to the baseline's) and a PNG plot of cost against the size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.measure import child_env
from daemon.graph.client import endpoint_label
from sim.pbx import ScimServer
from sim.world import FakeWorld

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE_TOKEN = "bench-baseline-token"
RUNS = ("initial", "no_change", "change_1pct")


def graph_kind(path: str, in_batch: bool) -> str:
    """A request's kind, for the counts: users delta, users listing, $batch (and its items), other."""
    label = endpoint_label(path)
    if label == "/$batch":
        return "batch"
    if in_batch:
        return "batch_item"
    return {"/users/delta": "users_delta", "/users": "users_list", "/groups/delta": "groups_delta"}.get(label, "other")


async def measured(command: list[str], env: dict[str, str], *, keep_output: bool = False) -> dict[str, Any]:
    """Run ``python -m bench.measure OUT command...`` and return what it measured (with ``keep_output``,
    also what the process wrote, as ``output``)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.measure", path, *command,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                   env=env)
    output, _ = await process.communicate()
    result: dict[str, Any] = json.loads(Path(path).read_text())
    os.unlink(path)
    if result["exit_code"] not in (0, 3):
        raise RuntimeError(f"{' '.join(command)} failed:\n{output.decode()[-3000:]}")
    if keep_output:
        result["output"] = output.decode(errors="replace")
    return result


async def one_run(world: FakeWorld, scim: ScimServer, who: str, pbx_tenant: str, command: list[str]) -> dict[str, Any]:
    assert world.sim is not None
    graph_before, pbx_before = len(world.sim.log), len(scim.requests(pbx_tenant))
    env = child_env()
    result = await measured(command, env)
    await asyncio.sleep(0)  # let the simulator's last answers be logged
    graph = Counter(graph_kind(r.path, r.in_batch) for r in world.sim.log[graph_before:])
    pbx = (await asyncio.to_thread(scim.settled_requests, pbx_tenant))[pbx_before:]
    result.update(graph_requests=sum(v for k, v in graph.items() if k != "batch_item"), graph=dict(graph),
                  pbx_reads=sum(1 for r in pbx if r.method == "GET"),
                  pbx_writes=sum(1 for r in pbx if r.method != "GET"), who=who)
    return result


def change_one_percent(world: FakeWorld, round_: int) -> int:
    assert world.made is not None
    members = world.made.members
    changed = members[: max(1, len(members) // 100)]
    for user in changed:
        world.tenant.change_user(user, jobTitle=f"Changed in round {round_}")
    return len(changed)


async def bench_size(users: int, args: argparse.Namespace, scim: ScimServer) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="m365sync-bench-") as tmp:
        world = FakeWorld(Path(tmp), users=users, scim=scim, pbx_tenant=f"daemon{users}", sync_photo=args.photos,
                          photo_bytes=args.photo_bytes)
        await world.start()
        assert world.sim is not None and world.config_path is not None
        world.sim.faults.latency = args.latency_ms / 1000
        world.idp.issued_access_tokens.add(BASELINE_TOKEN)
        graph_url = world.config_path.read_text().split('graph_url = "', 1)[1].split('"', 1)[0]
        daemon = ["daemon.cli", "sync", "--once", "--config", str(world.config_path)]
        baseline = ["bench.baseline", "--graph", graph_url, "--token", BASELINE_TOKEN,
                    "--pbx", scim.url(f"baseline{users}"), "--pbx-token", scim.token] + (["--photos"] if args.photos else [])
        runs: dict[str, dict[str, Any]] = {}
        try:
            for index, name in enumerate(RUNS):
                changed = change_one_percent(world, index) if name == "change_1pct" else 0
                runs[name] = {"changed_users": changed,
                              "daemon": await one_run(world, scim, "daemon", f"daemon{users}", daemon)}
                if args.daemon_only:
                    print(f"{users} users, {name}: daemon {runs[name]['daemon']}", flush=True)
                    continue
                runs[name]["baseline"] = await one_run(world, scim, "baseline", f"baseline{users}", baseline)
                print(f"{users} users, {name}: daemon {runs[name]['daemon']['wall_s']} s, "
                      f"baseline {runs[name]['baseline']['wall_s']} s", flush=True)
        finally:
            await world.stop()
    return {"users": users, "runs": runs}


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| users | run | wall s (daemon / baseline) | daemon CPU s | ms CPU per user | Graph requests | "
             "PBX reads | PBX writes | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for size in results:
        for name in RUNS:
            d, b = size["runs"][name]["daemon"], size["runs"][name]["baseline"]
            lines.append(
                f"| {size['users']:,} | {name} | {d['wall_s']} / {b['wall_s']} ({ratio(d['wall_s'], b['wall_s'])}) | "
                f"{d['cpu_s']} ({ratio(d['cpu_s'], b['cpu_s'])}) | {1000 * d['cpu_s'] / size['users']:.3f} | "
                f"{d['graph_requests']} / {b['graph_requests']} ({ratio(d['graph_requests'], b['graph_requests'])}) | "
                f"{d['pbx_reads']} / {b['pbx_reads']} | {d['pbx_writes']} / {b['pbx_writes']} | "
                f"{d['peak_rss_mb']} / {b['peak_rss_mb']} |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["users"] for r in results]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for axis, (metric, title) in zip(axes, (("wall_s", "wall time (s)"), ("graph_requests", "Graph requests"),
                                            ("pbx_reads", "PBX reads")), strict=True):
        for name, style in zip(RUNS, ("-", "--", ":"), strict=True):
            for who, colour in (("daemon", "tab:blue"), ("baseline", "tab:orange")):
                values = [max(r["runs"][name][who][metric], 0.01) for r in results]
                axis.plot(sizes, values, style, color=colour, marker="o", label=f"{who}, {name}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("users")
        axis.set_title(title)
    axes[0].legend(fontsize=7)
    figure.suptitle("m365sync against a naive full re-list, by tenant size")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


async def main(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    with ScimServer() as scim:
        results = [await bench_size(users, args, scim) for users in args.users]
    if args.daemon_only:
        return
    machine = {"cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "latency_ms": args.latency_ms, "photos": args.photos}
    (RESULTS / "results.json").write_text(json.dumps({"machine": machine, "sizes": results}, indent=1) + "\n")
    (RESULTS / "results.md").write_text(
        f"# Benchmark: daemon against the naive baseline\n\nMachine: {machine['cores']} cores, {machine['machine']}, "
        f"Python {machine['python']}, {machine['date']}; Graph latency {args.latency_ms} ms per request; photos "
        f"{'on' if args.photos else 'off'}. Figures as daemon / baseline (ratio).\n\n{table(results)}\n\n"
        "![cost against size](cost.png)\n")
    plot(results, RESULTS / "cost.png")
    print(table(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="Graph latency per HTTP request")
    parser.add_argument("--photos", action="store_true", help="sync photos (the baseline fetches every photo)")
    parser.add_argument("--photo-bytes", type=int, default=4096, help="size of each generated photo")
    parser.add_argument("--daemon-only", action="store_true",
                        help="skip the baseline (e.g. memory at 100k users); prints, writes no results")
    asyncio.run(main(parser.parse_args()))
