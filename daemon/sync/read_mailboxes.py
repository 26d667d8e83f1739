"""Which mailboxes are shared: ``mailboxSettings.userPurpose`` (read in
``$batch``es, cached, re-checked daily) or listed in ``shared_mailbox.mailboxes``.
Shared mailboxes never get extensions; their contacts become company contacts.

The same read keeps the mailbox's ``timeZone``, where an all-day event without
a zone of its own is placed. In delegated mode Graph answers 403
``ErrorAccessDenied`` for every mailbox's settings but the signed-in user's own,
whatever was consented: such mailboxes are reported (run, status, explain) with
the fix, never silently taken for user mailboxes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from daemon.config import TenantConfig
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.graph.records import MAX_TEXT, clean_text
from daemon.logging import get_logger
from daemon.sync.user_scope import live_users, stored_shared_mailboxes
from state.sync_store import GraphCopy, SyncStore

log = get_logger(__name__)

RECHECK_SECONDS = 86400.0
UNREADABLE = "unreadable"
SHARED_DETECTION_FIX = ("shared-mailbox detection reads mailboxSettings, which delegated mode can read only for the "
                        "signed-in user: use auth_mode = \"application\" (MailboxSettings.Read), or list the shared "
                        "mailboxes in shared_mailbox.mailboxes")


def purpose_of(settings: Any) -> str | None:
    """userPurpose as a plain string; the docs show both "shared" and {"value": "shared"}."""
    purpose = settings.get("userPurpose") if isinstance(settings, dict) else None
    if isinstance(purpose, dict):
        purpose = purpose.get("value")
    return str(purpose) if purpose else None


async def shared_mailboxes(tenant: TenantConfig, sync_store: SyncStore, graph: GraphClient, now: Callable[[], float],
                          *, recheck: bool = True, changed: frozenset[str] = frozenset()) -> dict[str, str]:
    """Shared mailbox user id -> userPrincipalName (detected or listed).

    ``recheck`` (the daily reconciliation): every live user whose check is a day old or never made is
    checked. Otherwise only the users merged since the last applied plan (``changed``, the run's dirty
    users) that were never checked, each set found by an index, so a run reads no copy of an unchanged
    user (a check that failed waits for the next daily one)."""
    name = tenant.name
    checked: dict[str, GraphCopy] = {}
    if recheck:
        users = await live_users(sync_store, name)
        async for copy in sync_store.iter_copies(name, "mailbox"):
            checked[copy.id] = copy
    else:
        new = changed - await sync_store.known_ids(name, "mailbox", changed)
        users = {c.id: str(c.data.get("userPrincipalName") or c.id)
                 for c in (await sync_store.graph_copies(name, "user", new)).values() if c.removed is None}
    due = [u for u in users
           if u not in checked or now() - float(checked[u].data.get("checked_at", 0)) >= RECHECK_SECONDS]
    requests = (BatchRequest(u, f"/users/{u}/mailboxSettings?$select=userPurpose,timeZone", mailbox=u) for u in due)
    results = []
    async for result in BatchExecutor(graph).run(requests):
        row: dict[str, Any] = {"id": result.request.key, "checked_at": now()}
        if result.ok:
            row["userPurpose"] = purpose_of(result.body)
            zone = result.body.get("timeZone") if isinstance(result.body, dict) else None
            if isinstance(zone, str) and zone and len(zone) <= MAX_TEXT:
                row["timeZone"] = clean_text(zone)
        elif result.status in (404, 403):
            row["userPurpose"] = "none" if result.status == 404 else UNREADABLE
        else:
            continue  # unknown this run; asked again next run
        results.append(row)
        checked[result.request.key] = GraphCopy(result.request.key, row, None)
    await sync_store.merge_changes(name, "mailbox", results)
    denied = [upn for u, upn in users.items() if u in checked and checked[u].data.get("userPurpose") == UNREADABLE]
    if denied:
        log.warning("mailbox settings not readable (403): these mailboxes may be shared but are treated as users",
                    tenant=name, mailboxes=len(denied), fix=SHARED_DETECTION_FIX)
    return await stored_shared_mailboxes(tenant, sync_store)


async def unreadable_settings(sync_store: SyncStore, tenant: str) -> list[str]:
    """The UPNs of live users whose mailboxSettings answered 403 at their last check."""
    return sorted((await sync_store.mailboxes_of_purpose(tenant, UNREADABLE)).values())


async def shared_detection_note(tenant: TenantConfig, sync_store: SyncStore, user_id: str) -> str | None:
    """What ``explain`` says of a user whose mailboxSettings answered 403, else None."""
    if not tenant.shared_mailbox.enabled:
        return None
    copy = await sync_store.graph_copy(tenant.name, "mailbox", user_id)
    if copy is None or copy.data.get("userPurpose") != UNREADABLE:
        return None
    return f"shared mailbox: unknown, its mailbox settings are not readable (403); {SHARED_DETECTION_FIX}"


async def mailbox_zones(sync_store: SyncStore, tenant: str, user_ids: Iterable[str]) -> dict[str, str]:
    """``mailboxSettings.timeZone`` of these users, where it was read."""
    copies = await sync_store.graph_copies(tenant, "mailbox", user_ids)
    return {u: str(c.data["timeZone"]) for u, c in copies.items() if c.data.get("timeZone")}
