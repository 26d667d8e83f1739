"""A tenant's authorization state, recorded by the browser flow and the token
path alike, and logged and exposed once per change rather than per attempt."""

from __future__ import annotations

from daemon.logging import get_logger
from daemon.metrics import Metrics
from state.store import Store

log = get_logger(__name__)

AUTHORIZED = "authorized"
AUTHORIZATION_REQUIRED = "authorization_required"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
DISCONNECTED = "disconnected"  # m365sync disconnect: no runs until authorized again
AUTH_STATES = (AUTHORIZED, AUTHORIZATION_REQUIRED, REAUTHORIZATION_REQUIRED, DISCONNECTED)


class AuthStates:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    async def record(self, tenant: str, state: str, *, owner: str | None = None, reason: str | None) -> None:
        """Record a state; log and expose it once per change, not per attempt."""
        row = await self.store.tenant(tenant)
        previous = row.auth_state if row is not None else None
        if previous == state and (row is None or row.auth_reason == reason):
            return
        await self.store.set_auth_state(tenant, state, owner=owner, reason=reason)
        self.publish(tenant, state)
        if state == REAUTHORIZATION_REQUIRED:
            log.error("tenant needs re-authorization; its syncs stop until an admin authorizes again",
                      tenant=tenant, reason=reason, action=f"m365sync authorize --tenant {tenant}")
        elif state == AUTHORIZED:
            log.info("tenant authorized", tenant=tenant, owner=owner)
        else:
            log.warning("tenant is not authorized", tenant=tenant, reason=reason)

    def publish(self, tenant: str, state: str) -> None:
        for candidate in AUTH_STATES:
            self.metrics.auth_state.labels(tenant, candidate).set(1 if candidate == state else 0)
