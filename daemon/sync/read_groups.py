"""Read the configured groups' delta (``members@delta``) into stored copies
and membership; the new deltaLinks wait for the commit.

One delta per 50 configured ids (``$filter=id eq ... or ...``), keyed by
the ids it covers. A round that starts without a link (a new or edited
``groups`` list, an expired state) reports the members as they are, not what
changed: the stored membership of its groups is replaced by it, so a member
removed while the list was being edited is not kept forever. Links of keys
no longer configured are dropped. With ``groups_transitive`` the members
come from ``transitiveMembers`` instead (Graph has no delta for it), listed
each run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.config import TenantConfig
from daemon.errors import DeltaExpired
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.graph.delta import DeltaRound, is_removed, stored_link
from daemon.graph.paging import listing_pages
from daemon.graph.records import Rejected
from daemon.logging import get_logger
from daemon.sync.intake import merge_checked, unidentified
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

FILTER_LIMIT = 50  # Graph accepts at most 50 ids in one delta $filter
USER_TYPE = "#microsoft.graph.user"


@dataclass
class GroupsRead:
    links: dict[str, str] = field(default_factory=dict)  # key -> new deltaLink, committed at the end
    missing: list[str] = field(default_factory=list)  # configured ids Graph does not know
    rejected: list[Rejected] = field(default_factory=list)  # recorded as failed objects


async def read_groups(tenant: TenantConfig, store: Store, sync_store: SyncStore, graph: GraphClient) -> GroupsRead:
    name = tenant.name
    read = GroupsRead()
    groups = sorted(tenant.groups)
    mode = "transitive" if tenant.groups_transitive else "direct"
    if await sync_store.value(name, "groups-mode") != mode:
        await store.drop_delta_links(name, "groups")  # membership was computed the other way: read afresh
        await sync_store.set_value(name, "groups-mode", mode)
    keys = []
    for start in range(0, len(groups), FILTER_LIMIT):
        chunk = groups[start : start + FILTER_LIMIT]
        key = ",".join(chunk)
        keys.append(key)
        clause = " or ".join(f"id eq '{g}'" for g in chunk)
        initial = f"/groups/delta?$filter={clause}&$select=displayName,mail,members"
        link = stored_link(graph, await store.delta_link(name, "groups", key), f"groups {key}")
        try:
            new_link = await _round(tenant, sync_store, graph, link or initial, chunk, read.rejected,
                                    fresh=link is None)
        except DeltaExpired:
            log.warning("groups delta state expired; reading the groups again", tenant=name)
            await store.drop_delta_link(name, "groups", key)
            new_link = await _round(tenant, sync_store, graph, initial, chunk, read.rejected, fresh=True)
        if new_link:
            read.links[key] = new_link
    await store.drop_delta_links(name, "groups", keep=keys)
    if tenant.groups_transitive:
        await _read_transitive(tenant, sync_store, graph, groups)
    known = await sync_store.known_ids(name, "group", groups)
    # Refused now or on an earlier read (kept as a failed object until it changes): failed, not unknown.
    refused = {r.id for r in read.rejected} | {graph_id for kind, graph_id, *_ in
                                                [*await sync_store.failing(name), *await sync_store.quarantined(name)]
                                                if kind == "group"}
    for group_id in groups:
        if group_id not in known and group_id not in refused:
            read.missing.append(group_id)
            log.warning("a configured group does not exist in Entra ID", tenant=name, group=group_id)
    return read


async def _round(tenant: TenantConfig, sync_store: SyncStore, graph: GraphClient, url: str, chunk: list[str],
                 rejected: list[Rejected], *, fresh: bool) -> str | None:
    name = tenant.name
    round_ = DeltaRound(graph, url)
    members: dict[str, set[str]] = {g: set() for g in chunk} if fresh else {}
    async for change in round_:
        if not isinstance(change, dict):
            change = {}
        properties = {k: v for k, v in change.items() if k != "members@delta"}
        rejected += await merge_checked(sync_store, name, "group", [properties])
        if not isinstance(change.get("id"), str):
            continue  # rejected above: nothing to hang its members on
        added: list[str] = []
        removed: list[str] = []
        delta_members = change.get("members@delta")
        for member in delta_members if isinstance(delta_members, list) else []:
            if isinstance(member, dict) and isinstance(member.get("id"), str):
                if member.get("@odata.type", USER_TYPE) != USER_TYPE:
                    continue  # a nested group: its members count only with groups_transitive
                (removed if is_removed(member) else added).append(member["id"])
        if tenant.groups_transitive:
            continue
        if fresh:
            members.setdefault(change["id"], set()).update(added)
        else:
            await sync_store.set_group_members(name, change["id"], added, removed)
    if round_.skipped:
        rejected.append(unidentified("group", round_.skipped))
    if fresh and not tenant.groups_transitive:
        await sync_store.replace_group_members(name, members)
    return round_.delta_link


async def _read_transitive(tenant: TenantConfig, sync_store: SyncStore, graph: GraphClient, groups: list[str]) -> None:
    """Members through nested groups; nested groups themselves are not members."""
    requests = (BatchRequest(g, f"/groups/{g}/transitiveMembers?$select=id", mailbox=None) for g in groups)
    found: dict[str, set[str]] = {}
    async for result in BatchExecutor(graph).run(requests):
        if not result.ok or not isinstance(result.body, dict):
            continue  # a group that does not exist is reported by read_groups
        members: set[str] = set()
        url = f"/groups/{result.request.key}/transitiveMembers"
        async for body in listing_pages(graph, url, first=result.body):
            values = body.get("value", []) if isinstance(body, dict) else []
            members |= {m["id"] for m in values if isinstance(m, dict) and m.get("@odata.type") == USER_TYPE}
        found[result.request.key] = members
    await sync_store.replace_group_members(tenant.name, found)
