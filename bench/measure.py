"""Run a module as ``__main__`` in this process, then write what it cost:

    python -m bench.measure OUT.json MODULE [ARGS...]

wall seconds, CPU seconds (user + system, imports included) and peak RSS of
this process: the simulator and the PBX run in other processes, so their work
is not counted here. Peak RSS is ``VmHWM`` from ``/proc/self/status``: Linux
carries ``ru_maxrss`` over from the parent across fork and exec, so it would
count the benchmark's own memory (the simulated tenant)."""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import time


def child_env() -> dict[str, str]:
    """The environment of a measured process: unbuffered output, and bytecode caching allowed even where
    the caller's shell forbids it (``PYTHONDONTWRITEBYTECODE``). An installed daemon runs from compiled
    bytecode (pip compiles the wheel); without the cache every measured process would compile the
    daemon's own modules from source again, about 0.07 s of start-up no production process pays."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def peak_rss_mb() -> float | None:
    """This process image's high-water RSS (Linux), in MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> int:
    out, module, *args = sys.argv[1:]
    started = time.perf_counter()
    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException as err:  # still say what it cost, and that it failed
        print(f"{module} failed: {type(err).__name__}: {err}", file=sys.stderr)
        code = 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = peak_rss_mb() or usage.ru_maxrss / 1024
    with open(out, "w", encoding="utf-8") as file:
        json.dump({"exit_code": code, "wall_s": round(time.perf_counter() - started, 3),
                   "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                   "peak_rss_mb": round(peak_mb, 1)}, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
