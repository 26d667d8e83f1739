"""The timeline of one initial run, seen from outside the daemon (``python -m bench.bulk --timeline``):
what precedes the PBX's first write, whether the PBX waits between requests, and the tail.

Every time is this machine's wall clock, in seconds after the daemon's process was started:
Graph requests from the simulator's log (answered), PBX requests from the latency proxy
(received, answered), the plan from the daemon's ``sync plan`` log line (the run is made to log
at ``info`` in JSON for it), and the exit when the process is reaped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PbxRequest:
    method: str
    path: str
    received: float  # by the proxy, before its latency
    answered: float  # by the proxy, to the daemon


def logged(output: str) -> list[tuple[float, str]]:
    """(time, event) of each of the daemon's JSON log lines; ``sync plan`` is its plan summary."""
    out = []
    for line in output.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "timestamp" in event:
            at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
            out.append((at, str(event.get("event"))))
    return out


def pbx_idle(requests: list[PbxRequest], latency_s: float) -> float:
    """Seconds between the first write's arrival at the PBX and the last write's answer with no
    write at the PBX (the proxy's latency is spent before the PBX sees a request)."""
    spans = sorted((r.received + latency_s, r.answered) for r in requests)
    idle, reached = 0.0, spans[0][0] if spans else 0.0
    for start, end in spans:
        idle += max(0.0, start - reached)
        reached = max(reached, end)
    return idle


def timeline(started: float, exited: float, graph_at: list[tuple[str, float]], pbx: list[PbxRequest],
             log: list[tuple[float, str]], latency_s: float) -> dict[str, Any]:
    """The run's marks, relative to ``started``; ``graph_at`` is (path, answered) per Graph request."""
    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - started, 3)

    writes = [r for r in pbx if r.method != "GET"]
    reads = [r for r in pbx if r.method == "GET"]
    users_pages = [t for path, t in graph_at if path.startswith("/users")]
    plan_at = next((t for t, event in log if event == "sync plan"), None)
    marks: dict[str, Any] = {
        "first_graph_request": rel(min((t for _, t in graph_at), default=None)),
        "last_users_page": rel(max(users_pages, default=None)),
        "last_graph_request_before_first_write": rel(max(
            (t for _, t in graph_at if not writes or t < writes[0].received), default=None)),
        "pbx_reads": [[rel(r.received), rel(r.answered)] for r in reads],
        "plan_logged": rel(plan_at),
        "bulk": [[rel(r.received), rel(r.answered)] for r in writes],
        "log": [[rel(t), event] for t, event in log],
        "exit": rel(exited),
    }
    if writes:
        marks["pbx_idle_between_writes_s"] = round(pbx_idle(writes, latency_s), 3)
        marks["tail_after_last_answer_s"] = round(exited - max(r.answered for r in writes), 3)
    return marks
