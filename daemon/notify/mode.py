"""How fresh a tenant's PBX is kept, in one word and a reason, for
``status``, the status page and the metrics: ``push`` (Graph's change
notifications trigger reads) or ``poll`` (the fast polls, which every
scheduled tenant has: ``users.poll_seconds`` is at least 10 s)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from daemon.config import Config, TenantConfig
from state.notify_store import ACTIVE, NotifyStore

PROXY_HINT = "check that the proxy forwards /api/graph/ to the daemon (see contrib/proxy)"


@dataclass(frozen=True)
class Freshness:
    mode: str  # push | poll
    reason: str
    subscriptions: int = 0
    last_notification: float | None = None
    reachable: bool | None = None  # None: never tried

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def notifications_wanted(config: Config, tenant: TenantConfig) -> bool:
    """Notifications are on for every enabled kind whenever ``public_url`` is set
    (``[tenants.notifications] enabled`` defaults to true)."""
    return tenant.enabled and tenant.notifications.enabled and config.server.public_url is not None


async def freshness(config: Config, tenant: TenantConfig, store: NotifyStore) -> Freshness:
    fallback = "poll"
    if not notifications_wanted(config, tenant):
        why = ("no [server] public_url: Graph has nowhere to send notifications"
               if config.server.public_url is None else "[tenants.notifications] enabled = false")
        return Freshness(fallback, why)
    subscriptions = [s for s in await store.subscriptions(tenant.name) if s.state == ACTIVE]
    last = await store.last_notification(tenant.name)
    handshake = await store.handshake(tenant.name)
    if handshake is not None and not handshake.ok:
        return Freshness(fallback, f"{handshake.reason}; {PROXY_HINT}; tried again later",
                         len(subscriptions), last, False)
    if not subscriptions:
        return Freshness(fallback, "no subscription yet (created by the tenant's owner after its first run)",
                         0, last, None if handshake is None else handshake.ok)
    return Freshness("push", "Graph notifies changes; the schedule stays as the backstop", len(subscriptions), last,
                     True)
