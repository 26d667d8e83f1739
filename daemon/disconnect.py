"""``m365sync disconnect --tenant T [--deprovision [--delete]]``: stop syncing a
tenant and forget its authorization.

The tenant's tokens are dropped and its state becomes ``disconnected``:
scheduled runs and calendar polls skip it (application mode included) until
an admin authorizes it again, and the Teams presence pushed to its users is
removed from the PBX (nothing would keep it current). With ``--deprovision``, what the daemon made on
the PBX is undone first, through the same applier and mass-deletion guard as
a run: its users are disabled (or deleted with ``--delete``), its groups and
contacts deleted; past the guard's threshold they are held, and
``m365sync approve`` then ``disconnect --deprovision`` again applies them. A
tenant no longer in the configuration cannot reach its PBX: disconnecting it
forgets everything the state database kept for it (``status`` and
``/readyz`` list such tenants until then).
"""

from __future__ import annotations

import sys
from typing import TextIO

import aiohttp

from daemon.auth.states import DISCONNECTED
from daemon.commands import RESULT_EXIT_CODES, open_stores
from daemon.config import Config, TenantConfig, read_secret
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxOperation
from daemon.retry import Transport
from daemon.sync.apply import Applier
from daemon.sync.changes import Change, Phase, Plan
from daemon.sync.guard import guard, held_rows
from daemon.sync.presence import clear_presence
from daemon.sync.report import RunReport
from daemon.sync.runner import LOCK_OWNER, RUN_LOCK_SECONDS, _process_alive
from daemon.tls import transport_ssl_context
from state.pushed import Removed
from state.sync_store import SyncStore


async def disconnect(config: Config, name: str, deprovision: bool, delete: bool, out: TextIO = sys.stdout) -> int:
    tenant = config.find_tenant(name)
    metrics = Metrics(served=False)
    async with open_stores(config, metrics) as stores:
        if await stores.store.tenant(name) is None:
            print(f"m365sync: error: no tenant named {name!r} in the configuration or the state", file=sys.stderr)
            return 2
        if tenant is None:
            if deprovision:
                print(f"m365sync: error: {name} is no longer in the configuration, so its PBX cannot be reached; "
                      "add it back to deprovision, or disconnect without --deprovision", file=sys.stderr)
                return 2
            await stores.store.forget_tenant(name)
            print(f"{name}: disconnected; everything the state kept for it is forgotten", file=out)
            return 0
        holder = await stores.sync.try_lock(name, LOCK_OWNER, RUN_LOCK_SECONDS, _process_alive)
        if holder is not None:
            print(f"m365sync: error: {holder} is syncing {name}; try again when it finishes", file=sys.stderr)
            return 1
        try:
            async with aiohttp.ClientSession() as session:
                transport = Transport(session, name, metrics, ssl_context=transport_ssl_context(tenant.ca_file))
                pbx = PbxClient(transport, tenant.pbx.scim_url, read_secret(tenant.pbx.token_file))
                result = await _clear_presence(tenant, stores.sync, pbx, out)
                if deprovision:
                    result = _worse(result, await _deprovision(tenant, stores.sync, pbx, delete, out))
            await stores.store.drop_token_cache(name)
            await stores.store.set_auth_state(name, DISCONNECTED, reason="m365sync disconnect")
        finally:
            await stores.sync.unlock(name, LOCK_OWNER)
    print(f"{name}: disconnected; runs stop until it is authorized again (m365sync authorize --tenant {name})",
          file=out)
    return RESULT_EXIT_CODES.get(result, 1)


def _worse(first: str, second: str) -> str:
    """The result of two steps: the second's, unless the first was partial and the second a success."""
    return first if second == "success" else second


async def _clear_presence(tenant: TenantConfig, sync_store: SyncStore, pbx: PbxClient, out: TextIO) -> str:
    """The Teams presence pushed to the tenant's users goes: nobody reads it any more, and a stale
    "Busy" would keep routing calls."""
    report = await clear_presence(tenant.name, sync_store, pbx, "the tenant is disconnected")
    cleared = report.presence.written
    if cleared or report.failures:
        print(f"{tenant.name}: presence cleared from {cleared} user(s)", file=out)
    for line in report.failures:
        print(f"  failed: {line}", file=out)
    return "partial" if report.failures else "success"


async def _deprovision(tenant: TenantConfig, sync_store: SyncStore, pbx: PbxClient, delete: bool,
                       out: TextIO) -> str:
    """Disable (or delete) the tenant's users and delete its groups and contacts, through the guard."""
    name = tenant.name
    plan = Plan()
    for kind, pbx_kind, phase in (("contact", "Contact", Phase.DISABLE), ("group", "Group", Phase.GROUP_DELETE),
                                  ("user", "User", Phase.USER_DELETE)):
        for graph_id, pbx_id in sorted((await sync_store.pbx_ids(name, kind)).items()):
            if kind == "user" and not delete:
                operation = PbxOperation("update", "User", graph_id, pbx_id=pbx_id,
                                         operations=[{"op": "replace", "path": "active", "value": False}])
                change = Change("user", "disable", Phase.DISABLE, operation, Removed("user", graph_id, False),
                                graph_id, "m365sync disconnect --deprovision")
            else:
                operation = PbxOperation("delete", pbx_kind, graph_id, pbx_id=pbx_id)  # type: ignore[arg-type]
                change = Change(kind, "delete", phase, operation, Removed(kind, graph_id, False), graph_id,  # type: ignore[arg-type]
                                "m365sync disconnect --deprovision")
            plan.changes.append(change)
    held = await sync_store.held(name)
    counts = {kind: await sync_store.count_synced(name, kind) for kind in ("user", "group", "contact")}
    guard(plan, tenant, counts, {i for i, (_, _, approved) in held.items() if approved})
    await sync_store.hold(name, held_rows(plan.held))
    report = RunReport()
    await Applier(name, sync_store, pbx, report).apply(plan)
    done = ", ".join(f"{k} {v}" for kind in (report.counts, report.groups.counts, report.contacts.counts)
                     for k, v in sorted(kind.items())) or "nothing"
    print(f"{name}: deprovisioned: {done}", file=out)
    for line in report.failures:
        print(f"  failed: {line}", file=out)
    if plan.held:
        print(f"  held by the mass-deletion guard: {len(plan.held)}; check, then: m365sync approve --tenant {name} "
              f"and disconnect --deprovision again", file=out)
        return "deprovisions_held"
    return "partial" if report.failures else "success"
