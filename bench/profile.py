"""The initial run alone, measured several times and optionally profiled:
the figure ``bench/run.py`` reports for the first run, without the baseline
and the later runs, so a change to the engine can be checked in a minute.

    .venv/bin/python -m bench.profile --users 10000 --repeat 3
    .venv/bin/python -m bench.profile --users 10000 --repeat 0 --profile out.txt

Each repeat is a fresh world (Graph simulator in this process, scim2-server
as the PBX) and one ``daemon.cli sync --once`` in its own process, measured
by ``bench/measure.py`` as ``make bench`` does; the median of the repeats is
printed. ``--profile`` adds one more run under pyinstrument (its overhead
makes it useless for the figures) and writes its report there, in the
format its suffix names (``.txt`` text, ``.html``, ``.pyisession`` to render
later with ``pyinstrument --load``).
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


async def initial_run(scim: ScimServer, users: int, pbx_tenant: str, wrapper: list[str]) -> dict[str, Any]:
    """One fresh world and the daemon's first run against it, under ``wrapper`` (a module and its options)."""
    with tempfile.TemporaryDirectory(prefix="m365sync-profile-") as tmp:
        world = FakeWorld(Path(tmp), users=users, scim=scim, pbx_tenant=pbx_tenant, sync_photo=False)
        await world.start()
        assert world.config_path is not None
        try:
            out = Path(tmp) / "measure.json"
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.measure", str(out), *wrapper,
                "daemon.cli", "sync", "--once", "--config", str(world.config_path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=child_env())
            output, _ = await process.communicate()
            result: dict[str, Any] = json.loads(out.read_text())
            if result["exit_code"] not in (0, 3):
                raise RuntimeError(f"the daemon's run failed:\n{output.decode()[-3000:]}")
            return result
        finally:
            await world.stop()


async def main(args: argparse.Namespace) -> None:
    with ScimServer() as scim:
        runs = [await initial_run(scim, args.users, f"profile{args.users}r{index}", [])
                for index in range(args.repeat)]
        for run in runs:
            print(f"{args.users} users, initial: cpu {run['cpu_s']} s, wall {run['wall_s']} s, "
                  f"rss {run['peak_rss_mb']} MB", flush=True)
        if runs:
            print(f"median of {len(runs)}: cpu {statistics.median(r['cpu_s'] for r in runs)} s, "
                  f"wall {statistics.median(r['wall_s'] for r in runs)} s", flush=True)
        if args.profile:
            await initial_run(scim, args.users, f"profile{args.users}p",
                              ["pyinstrument", "--outfile", str(args.profile.resolve()), "-m"])
            print(f"profile written to {args.profile}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3, help="measured runs (the median is printed)")
    parser.add_argument("--profile", type=Path, help="also write a pyinstrument text profile of one more run here")
    asyncio.run(main(parser.parse_args()))
