"""Which mailboxes are shared: ``mailboxSettings.userPurpose`` (read in
``$batch``es, cached, re-checked daily) or listed in ``shared_mailbox.mailboxes``.
Shared mailboxes never get extensions; their contacts become company contacts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.config import TenantConfig
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from state.sync_store import GraphCopy, SyncStore

RECHECK_SECONDS = 86400.0


def purpose_of(settings: Any) -> str | None:
    """userPurpose as a plain string; the docs show both "shared" and {"value": "shared"}."""
    purpose = settings.get("userPurpose") if isinstance(settings, dict) else None
    if isinstance(purpose, dict):
        purpose = purpose.get("value")
    return str(purpose) if purpose else None


async def shared_mailboxes(tenant: TenantConfig, sync_store: SyncStore, graph: GraphClient, now: Callable[[], float]) -> dict[str, str]:
    """Shared mailbox user id -> userPrincipalName (detected or listed)."""
    name = tenant.name
    users: dict[str, str] = {}
    async for copy in sync_store.iter_copies(name, "user"):
        if copy.removed is None:
            users[copy.id] = str(copy.data.get("userPrincipalName") or copy.id)
    checked: dict[str, GraphCopy] = {}
    async for copy in sync_store.iter_copies(name, "mailbox"):
        checked[copy.id] = copy
    due = [u for u in users
           if u not in checked or now() - float(checked[u].data.get("checked_at", 0)) >= RECHECK_SECONDS]
    requests = (BatchRequest(u, f"/users/{u}/mailboxSettings?$select=userPurpose", mailbox=u) for u in due)
    results = []
    async for result in BatchExecutor(graph).run(requests):
        if result.ok:
            purpose = purpose_of(result.body)
        elif result.status in (404, 403):
            purpose = "none" if result.status == 404 else "unreadable"
        else:
            continue  # unknown this run; asked again next run
        results.append({"id": result.request.key, "userPurpose": purpose, "checked_at": now()})
        checked[result.request.key] = GraphCopy(result.request.key, results[-1], None)
    await sync_store.merge_changes(name, "mailbox", results)
    shared = {u: upn for u, upn in users.items() if u in checked and checked[u].data.get("userPurpose") == "shared"}
    for reference in tenant.shared_mailbox.mailboxes:
        found = await sync_store.find_user(name, reference)
        if found is not None and found.removed is None:
            shared[found.id] = str(found.data.get("userPrincipalName") or found.id)
    return shared
