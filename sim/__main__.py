"""``python -m sim --users 1000 --port 8800``: a standalone Graph simulator."""

from __future__ import annotations

import argparse

from aiohttp import web

from daemon.clock import SystemClock
from sim.app import Simulator
from sim.generator import generate_tenant
from sim.graph import SimSettings
from sim.store import SimTenant


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--contacts", type=int, default=5, help="contacts per user")
    parser.add_argument("--events", type=int, default=3, help="events per user")
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--token", action="append", help="accepted bearer token (repeatable); default: any")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="added to every HTTP request (a $batch counts once)")
    parser.add_argument("--throttle", type=float, default=0.0,
                        help="fraction of requests (and of $batch items) answered 429 with Retry-After")
    parser.add_argument("--retry-after", type=int, default=2, help="seconds in the throttled answers' Retry-After")
    parser.add_argument("--list-max-top", type=int, default=999,
                        help="the largest $top GET /users accepts (Graph: 999)")
    parser.add_argument("--photo-bytes", type=int, default=64, help="size of each generated photo")
    args = parser.parse_args()
    tenant = SimTenant(SystemClock())
    made = generate_tenant(tenant, args.users, args.seed, args.contacts, args.events, args.groups,
                           photo_bytes=args.photo_bytes)
    simulator = Simulator(tenant, SimSettings(list_max_top=args.list_max_top),
                          accepted_tokens=set(args.token) if args.token else None)
    simulator.faults.latency = args.latency_ms / 1000
    simulator.faults.throttle_fraction = simulator.faults.batch_item_throttle_fraction = args.throttle
    simulator.faults.retry_after = args.retry_after
    print(f"simulated tenant: {len(made.all_users)} users, {len(made.groups)} groups; "
          f"Graph at http://{args.host}:{args.port}/v1.0", flush=True)
    web.run_app(simulator.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
