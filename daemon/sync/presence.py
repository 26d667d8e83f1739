"""Teams presence to the PBX's ``pbx:presence``, polled every
``presence.poll_seconds`` because Graph's presence subscriptions are
delegated-only and last an hour; the batch call is the application route
(https://learn.microsoft.com/en-us/graph/api/cloudcommunications-getpresencesbyuserid).

A poll is the one pipeline shape: read (``getPresencesByUserId``, 650 users a
call, :data:`READS_IN_FLIGHT` at once, within the 1,500 requests per 30 s of
one app and tenant), plan (a PATCH of that one attribute for the users whose
presence changed since the last push, which ``presence_state`` remembers),
the plan summary logged, and the one applier (``/Bulk`` where the PBX
supports it) in chunks of :data:`WRITE_CHUNK`, pipelined: a change waits for
its own small request, not for one ``/Bulk`` of every change of the poll
(1,000 PATCHes in one request take the PBX seconds; see
``bench/results/presence.md``). Turned off, or the tenant disconnected, what
was pushed is removed (:func:`clear_presence`).

A 403 (the app lacks ``Presence.Read.All``, or its consent was withdrawn) is
remembered (:data:`PRESENCE_DENIED`, shown by ``status``) and warned about
once, when it starts; its end is logged once too. A poll every 30 s does not
repeat the warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from daemon.config import TenantConfig
from daemon.errors import AccessDenied, GraphPayloadError
from daemon.graph.client import GraphClient
from daemon.graph.records import MAX_ID, clean_text
from daemon.logging import get_logger
from daemon.pbx.schema import PBX_USER
from daemon.pbx.types import PbxOperation, PbxWriter
from daemon.sync.apply import Applier
from daemon.sync.changes import Change, Phase, Plan
from daemon.sync.report import RunReport
from daemon.window import run_windowed
from state.attributes import PresencePushed
from state.sync_store import SyncStore

log = get_logger(__name__)

PRESENCE_PATH = "/communications/getPresencesByUserId"
IDS_PER_CALL = 650  # "a maximum of 650 user IDs" per request (the API page's request body)
MAX_VALUE = 64  # availability and activity are short names; Graph adds new ones (open strings)
PRESENCE_ATTRIBUTE = f"{PBX_USER}:presence"
READS_IN_FLIGHT = 4  # 16 calls at 10k users: a poll's read takes about four calls' latency, not sixteen
WRITE_CHUNK = 100  # PATCHes per /Bulk: the first users land after one small request; the PBX's cost per op stays
PRESENCE_DENIED = "presence-denied"  # tenant_sync_state: since when, and why, Graph refuses presence (403)

Presence = tuple[str, str]  # (availability, activity)


def chunks(ids: Sequence[str], size: int = IDS_PER_CALL) -> list[Sequence[str]]:
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def parse_presences(body: Any, asked: Iterable[str]) -> dict[str, Presence]:
    """The answer's ``{id: (availability, activity)}`` for the ids asked about; an item that is
    not the documented shape is left out (that user's presence stays as it was)."""
    values = body.get("value") if isinstance(body, Mapping) else None
    if not isinstance(values, list):
        raise GraphPayloadError("Graph answered getPresencesByUserId without a value list")
    wanted = set(asked)
    found: dict[str, Presence] = {}
    for item in values:
        if not isinstance(item, Mapping):
            continue
        user_id, availability, activity = item.get("id"), item.get("availability"), item.get("activity")
        if not (isinstance(user_id, str) and len(user_id) <= MAX_ID and user_id in wanted):
            continue
        if isinstance(availability, str) and isinstance(activity, str):
            found[user_id] = (clean_text(availability)[:MAX_VALUE], clean_text(activity)[:MAX_VALUE])
    return found


async def read_presences(graph: GraphClient, user_ids: Sequence[str], report: RunReport) -> dict[str, Presence]:
    """Every user's presence, one POST per 650 users, up to :data:`READS_IN_FLIGHT` at once (a poll
    makes 16 calls at 10k users, far within Graph's 1,500 per 30 s; the bound keeps a burst small)."""
    presences: dict[str, Presence] = {}

    async def read(ids: Sequence[str]) -> None:
        response = await graph.request("POST", PRESENCE_PATH, json_body={"ids": list(ids)})
        report.presence.requests += 1
        presences.update(parse_presences(response.body, ids))

    await run_windowed([partial(read, ids) for ids in chunks(user_ids)], READS_IN_FLIGHT)
    report.presence.polled += len(user_ids)
    return presences


def plan_presence(users: Iterable[tuple[str, str, str]], presences: Mapping[str, Presence | None],
                  pushed: Mapping[str, Presence]) -> Plan:
    """One PATCH per user (id, PBX id, UPN) whose presence differs from the one last pushed;
    ``None`` for a user removes the attribute (presence turned off)."""
    plan = Plan()
    for user_id, pbx_id, upn in users:
        if user_id not in presences:
            continue  # Graph said nothing about this user: what is on the PBX stays
        presence = presences[user_id]
        if presence == pushed.get(user_id):
            continue
        if presence is None:
            operations: list[dict[str, Any]] = [{"op": "remove", "path": PRESENCE_ATTRIBUTE}]
            reason = "presence sync turned off"
        else:
            value = {"availability": presence[0], "activity": presence[1]}
            operations = [{"op": "replace", "path": PRESENCE_ATTRIBUTE, "value": value}]
            reason = "/".join(presence)
        operation = PbxOperation("update", "User", user_id, operations=operations, pbx_id=pbx_id)
        plan.changes.append(Change("presence", "update", Phase.WRITE, operation, PresencePushed(user_id, presence),
                                   upn, reason))
    return plan


@dataclass
class PresenceSync:
    tenant: TenantConfig
    sync_store: SyncStore
    graph: GraphClient
    writer: PbxWriter

    async def run(self, report: RunReport | None = None) -> RunReport:
        """One poll: the presence of every active synced user; only changes are written."""
        report = report if report is not None else RunReport()
        name = self.tenant.name
        users = await self.sync_store.active_users(name)
        try:
            presences: Mapping[str, Presence | None] = await read_presences(self.graph, [u[0] for u in users], report)
        except AccessDenied as err:
            await self._denied(err)
            report.failures.append(f"presence: not permitted (403): {err.reason}")
            return report
        if await self.sync_store.value(name, PRESENCE_DENIED):
            await self.sync_store.set_value(name, PRESENCE_DENIED, "")
            log.info("presence readable again", tenant=name)
        plan = plan_presence(users, presences, await self.sync_store.presence_states(name))
        writes = len(plan.changes)
        # Logged like a run's plan; at debug when it writes nothing, since a poll comes every 30 s.
        (log.info if writes else log.debug)("sync plan", tenant=name, kinds=["presence"], changes=plan.summary(),
                                            writes=writes, held=0)
        await Applier(name, self.sync_store, self.writer, report, chunk_size=WRITE_CHUNK).apply(plan)
        return report

    async def _denied(self, err: AccessDenied) -> None:
        """Remember the refusal; warn only when it starts (the poll comes every few seconds)."""
        name = self.tenant.name
        if await self.sync_store.value(name, PRESENCE_DENIED):
            return
        await self.sync_store.set_value(name, PRESENCE_DENIED, json.dumps({"since": self.sync_store.clock(),
                                                                           "reason": err.reason}))
        log.warning("presence not permitted (403): grant Presence.Read.All; polls go on, and status shows it "
                    "until Graph allows it", tenant=name, code=err.code or "403")

    async def clear(self, report: RunReport | None = None) -> RunReport:
        return await clear_presence(self.tenant.name, self.sync_store, self.writer, "presence.enabled is off", report)


async def clear_presence(name: str, sync_store: SyncStore, writer: PbxWriter, why: str,
                         report: RunReport | None = None) -> RunReport:
    """Remove the presence pushed to the tenant's users (turned off, or the tenant disconnected), so no
    call is routed by a presence no longer read. Only users with a pushed presence are written."""
    report = report if report is not None else RunReport()
    pushed = await sync_store.presence_states(name)
    if not pushed:
        return report
    pbx_ids = await sync_store.pbx_ids(name, "user")
    labels = {user_id: upn for user_id, _, upn in await sync_store.active_users(name)}
    users = [(u, pbx_ids[u], labels.get(u, u)) for u in sorted(pushed) if u in pbx_ids]
    plan = plan_presence(users, dict.fromkeys(pushed), pushed)
    plan.bookkeeping += [PresencePushed(u, None) for u in pushed if u not in pbx_ids]  # gone from the PBX
    log.info(f"presence cleared: {why}", tenant=name, users=len(plan.changes))
    await Applier(name, sync_store, writer, report).apply(plan)
    return report


async def presence_denied(sync_store: SyncStore, name: str) -> dict[str, Any] | None:
    """Since when and why Graph refuses the tenant's presence (None: it does not)."""
    stored = await sync_store.value(name, PRESENCE_DENIED)
    return json.loads(stored) if stored else None

