"""The planner's scope inputs for users, gathered from stored data in one place,
so that ``explain`` and the user pipeline cannot give two answers to one question."""

from __future__ import annotations

from daemon.config import TenantConfig
from daemon.sync.scope import ScopeDecision, decide
from state.sync_store import GraphCopy, SyncStore


async def live_users(sync_store: SyncStore, tenant: str) -> dict[str, str]:
    """Stored users not removed in Entra ID: id -> userPrincipalName."""
    users: dict[str, str] = {}
    async for copy in sync_store.iter_copies(tenant, "user"):
        if copy.removed is None:
            users[copy.id] = str(copy.data.get("userPrincipalName") or copy.id)
    return users


async def stored_shared_mailboxes(tenant: TenantConfig, sync_store: SyncStore) -> dict[str, str]:
    """Shared mailbox user id -> userPrincipalName, from the stored ``mailbox``
    copies (``userPurpose``) and ``shared_mailbox.mailboxes``; empty unless
    ``shared_mailbox.enabled``, as the planner sees it."""
    if not tenant.shared_mailbox.enabled:
        return {}
    name = tenant.name
    shared = await sync_store.mailboxes_of_purpose(name, "shared")
    for reference in tenant.shared_mailbox.mailboxes:
        found = await sync_store.live_user_named(name, reference)
        if found is not None:
            shared[found[0]] = found[1]
    return shared


async def decide_stored(tenant: TenantConfig, sync_store: SyncStore, copy: GraphCopy) -> ScopeDecision:
    """The planner's decision for one stored user, with every input it uses."""
    members = await sync_store.members_of(tenant.name, tenant.groups)
    shared = await stored_shared_mailboxes(tenant, sync_store)
    return decide(copy.data, copy.removed, tenant, members, frozenset(shared))
