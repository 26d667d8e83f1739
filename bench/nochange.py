"""The CPU of a no-change run inside the daemon (issue 24): what one sync of
a tenant costs when Graph's delta is empty, without the process start and
the imports that ``bench.run``'s figures include.

    .venv/bin/python -m bench.nochange                          # 10k and 100k users
    .venv/bin/python -m bench.nochange --users 10000 --profile profile.txt
    .venv/bin/python -m bench.nochange --users 1000 10000 --contacts-groups   # with contacts and groups on

For each size: the Graph simulator (``python -m sim``, a process of its own,
so its CPU is not counted) with a generated tenant of users; the state in a
fresh SQLite file; a PBX in this process that accepts every write at once
(the initial run only builds the state; the no-change run writes nothing and
reads no inventory). The initial run is not measured; then ``--runs``
no-change runs, each measured as this process's CPU time around the run
(``time.process_time``), reported as the median and the smallest. With
``--profile``, one more no-change run under pyinstrument (the dev extra),
its text written to the file. With ``--contacts-groups``, every user and
shared mailbox has ``CONTACTS`` contacts, the tenant has ``GROUPS`` groups,
and personal contacts, shared-mailbox detection and the groups (as dialable
PBX groups) are on.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import aiohttp

from bench.tenants import graph_simulator
from daemon.config import TenantConfig
from daemon.graph.client import GraphClient
from daemon.graph.delta import DeltaRound
from daemon.logging import configure_logging
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxOperation, PbxOutcome
from daemon.retry import RetryPolicy, Transport
from daemon.sync.tenant import build_tenant_sync
from sim.world import free_port
from state.open import open_database
from state.store import Store
from state.sync_store import SyncStore

TENANT = "bench"
CONTACTS = 2  # per mailbox, with --contacts-groups
GROUPS = 20


class AcceptingPbx:
    """Every write succeeds (ids made up), and the PBX holds nothing of ours: the cheapest PBX there is."""

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        return PbxOutcome(operation, pbx_id=operation.pbx_id or f"pbx-{operation.external_id}")

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        for operation in operations:
            yield await self.execute(operation)

    async def iter_objects(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        for _ in ():
            yield

    async def operations_per_request(self) -> int:
        return 1000  # as a PBX announcing bulk.maxOperations = 1000


async def _token(*, force_refresh: bool = False) -> str:
    return "bench-token"


def tenant_config(base: Path, groups: list[str] | None = None) -> TenantConfig:
    """Users only; with ``groups``, personal contacts, shared mailboxes and those groups too."""
    more: dict[str, Any] = {} if groups is None else {
        "personal_contacts": {"enabled": True}, "shared_mailbox": {"enabled": True},
        "groups": groups, "groups_starting_extension_number": "900000"}
    return TenantConfig.model_validate({
        "name": TENANT, "directory_id": "11111111-2222-3333-4444-555555555555",
        "application_id": "66666666-7777-8888-9999-000000000000",
        "pbx": {"scim_url": "http://127.0.0.1:9/v2", "token_file": "pbx-token"},
        "users": {"enabled": True, "starting_extension_number": "100000", "sync_photo": False}, **more,
    }, context={"base_dir": base})


async def group_ids(graph: GraphClient) -> list[str]:
    """Every group the simulator generated (their ids are random)."""
    return sorted([str(change["id"]) async for change in DeltaRound(graph, "/groups/delta?$select=displayName")
                   if isinstance(change, dict)])


async def one_size(users: int, runs: int, profile: Path | None, contacts_groups: bool = False) -> dict[str, Any]:
    port = free_port()
    simulator = graph_simulator(port, users, contacts=CONTACTS if contacts_groups else 0,
                                groups=GROUPS if contacts_groups else 0)
    try:
        with tempfile.TemporaryDirectory(prefix="m365sync-nochange-") as tmp:
            db = await open_database(Path(tmp) / "state.db")
            store, sync_store = Store(db), SyncStore(db)
            await store.register_tenant(TENANT, "d", "a")
            pbx = AcceptingPbx()
            async with aiohttp.ClientSession() as session:
                transport = Transport(session, TENANT, Metrics(), retry=RetryPolicy(max_attempts=4),
                                      rng=random.Random(7))
                graph = GraphClient(transport, f"http://127.0.0.1:{port}", _token)
                tenant = tenant_config(Path(tmp), await group_ids(graph) if contacts_groups else None)

                async def run() -> dict[str, int]:
                    report = await build_tenant_sync(tenant, store, sync_store, graph, cast(PbxClient, pbx), pbx,
                                                     time.time).run()
                    assert report.result == "success", report.failures
                    return {kind: sum(counts.values()) for kind, counts in report.counts_by_kind().items()}

                initial = await run()
                cpu: list[float] = []
                for _ in range(runs):
                    start = time.process_time()
                    counts = await run()
                    cpu.append(time.process_time() - start)
                    assert not counts, f"a no-change run wrote {counts}"
                if profile is not None:
                    from pyinstrument import Profiler

                    profiler = Profiler(interval=0.0005, async_mode="enabled")
                    with profiler:
                        await run()
                    profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
            await db.close()
    finally:
        simulator.terminate()
        simulator.wait()
    return {"users": users, "contacts_groups": contacts_groups, "initial_writes": sum(initial.values()), "runs": runs,
            "cpu_ms_median": round(1000 * statistics.median(cpu), 1), "cpu_ms_min": round(1000 * min(cpu), 1)}


async def main(args: argparse.Namespace) -> None:
    configure_logging("error", "console")
    for users in args.users:
        print(await one_size(users, args.runs, args.profile, args.contacts_groups), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--runs", type=int, default=5, help="no-change runs measured per size")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile of one more no-change run here")
    parser.add_argument("--contacts-groups", action="store_true",
                        help=f"{CONTACTS} contacts per mailbox, {GROUPS} groups; contacts, shared mailboxes, groups on")
    asyncio.run(main(parser.parse_args()))
