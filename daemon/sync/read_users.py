"""Read the users delta into the stored copies; the new deltaLink is returned,
committed only after the whole run was applied.

A first read (and a full reconciliation after the delta state expired) does
not page through a delta round of ~100 users a page: it mints a deltaLink
"from now" (``$deltaToken=latest``) first, then lists ``/users`` in pages of
999, so it costs about N/999 requests; changes made during the listing come
in the next round (merging twice is harmless). Users the listing does not
return (soft-deleted, or gone) are deprovisioned through the guard.

A delta item for a user never seen before that lacks ``userPrincipalName``
(after the state was lost, or after ``$select`` grew, Graph may send only
the changed properties) is completed with a batched GET before it is merged,
so no user is ever planned half-empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.config import TenantConfig
from daemon.errors import DeltaExpired, GraphError, GraphPayloadError
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.graph.delta import DeltaRound, is_removed, stored_link
from daemon.graph.paging import listing_pages
from daemon.graph.records import Rejected, parse
from daemon.logging import get_logger
from daemon.sync.intake import record_rejected, unidentified
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

USER_SELECT = (
    "displayName,givenName,surname,userPrincipalName,mail,jobTitle,department,"
    "businessPhones,mobilePhone,accountEnabled,userType,createdDateTime"
)
REQUIRED = ("userPrincipalName", "accountEnabled")
MERGE_PAGE = 200
LIST_PAGE = 999  # GET /users accepts $top up to 999

Progress = Callable[[str, int, int], None]


@dataclass
class UsersRead:
    delta_link: str | None
    full_round: bool
    reconciled: int = 0
    completed: int = 0  # partial items completed with a GET
    rejected: list[Rejected] = field(default_factory=list)  # recorded as failed objects


async def read_users(tenant: TenantConfig, store: Store, sync_store: SyncStore, graph: GraphClient,
                     progress: Progress | None = None) -> UsersRead:
    """Merge the users delta; a full round (first run, expired state) also reconciles removals."""
    link = stored_link(graph, await store.delta_link(tenant.name, "users"), "users")
    try:
        return await _round(tenant, sync_store, graph, link, progress)
    except DeltaExpired:
        log.warning("users delta state expired; running a full round and reconciling", tenant=tenant.name)
        await store.drop_delta_link(tenant.name, "users")
        return await _round(tenant, sync_store, graph, None, progress)


async def _round(tenant: TenantConfig, sync_store: SyncStore, graph: GraphClient, link: str | None,
                 progress: Progress | None) -> UsersRead:
    read = UsersRead(None, link is None)
    seen: set[str] = set()
    page: list[dict[str, Any]] = []
    refused: list[Rejected] = []  # rejected as read (those of completions are recorded where completed)
    if link is None:  # "sync from now", then the listing: the link is minted first
        latest = DeltaRound(graph, f"/users/delta?$select={USER_SELECT}&$deltaToken=latest")
        async for item in latest:  # none expected; merged anyway
            parsed = parse("user", item)
            if isinstance(parsed, Rejected):
                read.rejected.append(parsed)
                refused.append(parsed)
            else:
                page.append(parsed)
        changes: AsyncIterator[dict[str, Any]] = _listing(graph)
        delta_link = latest.delta_link
    else:
        round_ = DeltaRound(graph, link, expected_objects=await sync_store.count_copies(tenant.name, "user"))
        changes = aiter(round_)
    async for item in changes:
        parsed = parse("user", item)
        if isinstance(parsed, Rejected):
            read.rejected.append(parsed)
            refused.append(parsed)
            if parsed.id is not None:
                seen.add(parsed.id)  # kept as it was, never taken for gone
            continue
        change = parsed
        if is_removed(change) is None:
            seen.add(change["id"])
        page.append(change)
        if len(page) >= MERGE_PAGE:
            read.completed += await _merge(tenant, sync_store, graph, page, read.rejected)
            page = []
            if progress is not None:
                progress("read", len(seen), 0)
    read.completed += await _merge(tenant, sync_store, graph, page, read.rejected)
    if link is not None and round_.skipped:
        read.rejected.append(unidentified("user", round_.skipped))
    await record_rejected(sync_store, tenant.name, refused)
    if link is None:
        missing = await sync_store.mark_missing_removed(tenant.name, "user", seen)
        read.reconciled = len(missing)
        if missing:
            log.info("the full listing no longer returns some users; they are deprovisioned", tenant=tenant.name,
                     users=len(missing))
        read.delta_link = delta_link
    else:
        read.delta_link = round_.delta_link
    return read


async def _listing(graph: GraphClient) -> AsyncIterator[dict[str, Any]]:
    """Every user, ``GET /users`` in pages of 999 (live users only)."""
    async for body in listing_pages(graph, f"/users?$select=id,{USER_SELECT}&$top={LIST_PAGE}"):
        if not isinstance(body, dict) or not isinstance(body.get("value"), list):
            raise GraphPayloadError("the /users listing answered without a 'value' list")
        for item in body["value"]:
            yield item  # one without a usable id is rejected (and reported) by the reader


async def _merge(tenant: TenantConfig, sync_store: SyncStore, graph: GraphClient, page: list[dict[str, Any]],
                 rejected: list[Rejected] | None = None) -> int:
    """Merge one (parsed) page, completing partial items for unknown users first (parsed in turn, a rejected
    one recorded and added to ``rejected``); returns how many were completed."""
    candidates = [c for c in page if is_removed(c) is None and any(f not in c for f in REQUIRED)]
    if candidates:
        known = await sync_store.known_ids(tenant.name, "user", [c["id"] for c in candidates])
        unknown = {c["id"] for c in candidates if c["id"] not in known}
        if unknown:
            full = await _complete(graph, unknown)
            completed = [parse("user", full.get(c["id"], c)) if c["id"] in unknown else c for c in page]
            refused = [c for c in completed if isinstance(c, Rejected)]
            await record_rejected(sync_store, tenant.name, refused)
            if rejected is not None:
                rejected += refused
            page = [c for c in completed if not isinstance(c, Rejected)]
            log.info("completed partial delta items of unknown users", tenant=tenant.name, users=len(unknown))
            await sync_store.merge_changes(tenant.name, "user", page)
            return len(unknown)
    await sync_store.merge_changes(tenant.name, "user", page)
    return 0


async def _complete(graph: GraphClient, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The whole user for each id (a 404 means it is gone by now: a removal)."""
    requests = (BatchRequest(i, f"/users/{i}?$select=id,{USER_SELECT}") for i in sorted(ids))
    out: dict[str, dict[str, Any]] = {}
    async for result in BatchExecutor(graph).run(requests):
        key = result.request.key
        if result.ok and isinstance(result.body, dict):
            out[key] = {**result.body, "id": key}
        elif result.status == 404:
            out[key] = {"id": key, "@removed": {"reason": "deleted"}}
        else:  # unknown this run: fail the run rather than plan a half-empty user
            error = result.error or GraphError(f"Graph answered {result.status}")
            raise error
    return out
