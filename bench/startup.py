"""What a ``sync --once`` process spends importing, on a no-change run (issue 24).

    .venv/bin/python -m bench.startup                 # 1k users, 5 measured runs
    .venv/bin/python -m bench.startup --users 1000 --runs 5 --top 15

The demo's fake world (the Graph simulator in this process, scim2-server as
the PBX); one initial ``m365sync sync --once`` builds the state, then each
measured run is ``python -m bench.measure OUT daemon.cli sync --once``: the
process's whole CPU. Its import CPU is measured apart, as the CPU time a
fresh interpreter takes to import, in order, the modules a ``-X importtime``
run of the same command imported at the top level (``-X importtime`` itself
reports wall time, which a busy machine inflates). Reported as medians, with
the modules of the largest cumulative import time of the last run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.measure import child_env
from sim.pbx import ScimServer
from sim.world import FakeWorld

IMPORT_CPU = """
import importlib, sys, time
start = time.process_time()
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
print(time.process_time() - start)
"""


def imported(stderr: str) -> tuple[list[str], list[tuple[float, str]]]:
    """Of ``-X importtime`` output: the modules imported at the top level, in order, and
    (cumulative seconds, module) of every module."""
    top, cumulative = [], []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative_us, name = line.removeprefix("import time:").split("|")
        cumulative.append((int(cumulative_us) / 1e6, name.strip()))
        if not name.startswith("  "):  # nested imports are indented by two more spaces
            top.append(name.strip())
    return top, cumulative


async def import_cpu(modules: list[str]) -> float:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", IMPORT_CPU, *modules,
                                                   stdout=asyncio.subprocess.PIPE, env=child_env())
    out, _ = await process.communicate()
    return float(out.decode().strip().splitlines()[-1])


async def one_process(config: Path, importtime: bool) -> tuple[dict[str, Any], str]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    flags = ["-X", "importtime"] if importtime else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, *flags, "-m", "bench.measure", str(path), "daemon.cli", "sync", "--once", "--config",
        str(config), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=child_env())
    _, stderr = await process.communicate()
    result: dict[str, Any] = json.loads(path.read_text())
    path.unlink()
    if result["exit_code"] != 0:
        raise RuntimeError(stderr.decode()[-3000:])
    return result, stderr.decode()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="m365sync-startup-") as tmp, ScimServer() as scim:
        world = FakeWorld(Path(tmp), users=args.users, scim=scim, sync_photo=False)
        await world.start()
        try:
            assert world.config_path is not None
            await one_process(world.config_path, importtime=False)  # the initial run
            imports, whole = [], []
            cumulative: list[tuple[float, str]] = []
            for _ in range(args.runs):
                plain, _ = await one_process(world.config_path, importtime=False)
                whole.append(plain["cpu_s"])
                _, stderr = await one_process(world.config_path, importtime=True)
                top, cumulative = imported(stderr)
                imports.append(await import_cpu(top))
        finally:
            await world.stop()
    print(json.dumps({"users": args.users, "runs": args.runs,
                      "process_cpu_s_median": round(statistics.median(whole), 3),
                      "import_cpu_s_median": round(statistics.median(imports), 3),
                      "modules": len(cumulative)}))
    for seconds, name in sorted(cumulative, reverse=True)[: args.top]:
        print(f"{seconds:8.3f} s  {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=25, help="modules listed, by cumulative import time")
    asyncio.run(main(parser.parse_args()))
