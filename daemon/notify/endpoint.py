"""The endpoint Graph posts change notifications to, under ``/api/graph/``:
the most exposed input of the daemon (anyone on the internet may post).

- The validation handshake (``?validationToken=``) is answered with the
  URL-decoded token as ``text/plain``, as Graph requires
  (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks),
  only for a tenant with notifications on, and only a short printable token:
  the daemon echoes nothing else, ever.
- Each notification's subscription must be one this tenant stored, and its
  ``clientState`` that subscription's secret (compared in constant time);
  anything else is dropped and counted, and reads nothing.
- What must be read is persisted ("read kind K of tenant T (mailbox M)"),
  then 202 with an empty body: no read happens in the request, so the
  answer comes in milliseconds (Graph wants it within 3 s).
- The server's guard limits the body (64 KiB) and connections; a token
  bucket here limits the rate (429 with ``Retry-After``: Graph retries).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aiohttp import web

from daemon.config import TenantConfig
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.notify.subscriptions import LIFECYCLE_PATH, NOTIFY_PATH
from state.notify_store import REAUTHORIZE, REMOVED, NotifyStore, StoredSubscription
from state.sealing import Sealer

Known = tuple[StoredSubscription, bytes]  # a subscription of the tenant's and its unsealed clientState
log = get_logger(__name__)

MAX_TOKEN_LENGTH = 1024
MAX_ITEMS = 1000
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class NotificationSink(Protocol):
    """What the endpoint needs of the daemon (``daemon.notify.service.Notifications``)."""

    store: NotifyStore
    sealer: Sealer
    metrics: Metrics

    def tenant(self, name: str) -> TenantConfig | None:
        """The tenant, when it is configured, enabled and has notifications on."""

    async def persisted(self, tenant: str) -> None:
        """Reads were marked due: wake the reader here, or tell the tenant's owner."""


@dataclass
class RateLimit:
    """A token bucket: ``rate`` requests a second, bursts of ``burst``."""

    rate: float = 100.0
    burst: float = 400.0
    monotonic: Callable[[], float] = field(default=lambda: 0.0)
    _tokens: float = -1.0
    _at: float = 0.0

    def allow(self) -> bool:
        now = self.monotonic()
        if self._tokens < 0:
            self._tokens, self._at = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


SINK_KEY = web.AppKey("notifications", NotificationSink)
LIMIT_KEY = web.AppKey("notification_rate", RateLimit)


def add_routes(app: web.Application, sink: NotificationSink, limit: RateLimit) -> None:
    app[SINK_KEY] = sink
    app[LIMIT_KEY] = limit
    app.router.add_post(NOTIFY_PATH + "{tenant}", _notified)
    app.router.add_post(LIFECYCLE_PATH + "{tenant}", _notified)


async def _notified(request: web.Request) -> web.Response:
    sink, name = request.app[SINK_KEY], request.match_info["tenant"]
    if not request.app[LIMIT_KEY].allow():
        sink.metrics.notifications_rejected.labels(name if sink.tenant(name) else "", "rate").inc()
        return web.Response(status=429, headers={**NO_STORE, "Retry-After": "1"})
    tenant = sink.tenant(name)
    if tenant is None:
        return web.Response(status=404, headers=NO_STORE)
    if "validationToken" in request.query:
        return _handshake(request.query["validationToken"])
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        sink.metrics.notifications_rejected.labels(name, "malformed").inc()
        return web.Response(status=400, headers=NO_STORE)
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        sink.metrics.notifications_rejected.labels(name, "malformed").inc()
        return web.Response(status=400, headers=NO_STORE)
    marks = await _accepted_marks(sink, tenant, items)
    if marks:
        await sink.store.mark_due(name, marks, sink.store.clock())
        await sink.persisted(name)
    return web.Response(status=202, headers=NO_STORE)


def _handshake(token: str) -> web.Response:
    """200 with the decoded token (aiohttp has URL-decoded the query), nothing else."""
    if not 0 < len(token) <= MAX_TOKEN_LENGTH or not token.isprintable():
        return web.Response(status=400, headers=NO_STORE)
    return web.Response(text=token, content_type="text/plain", headers=NO_STORE)


async def _accepted_marks(sink: NotificationSink, tenant: TenantConfig, items: list[Any]
                          ) -> set[tuple[str, str | None]]:
    """The reads the genuine items ask for; every other item is counted as rejected."""
    marks: set[tuple[str, str | None]] = set()
    known: dict[str, Known | None] = {}  # subscription id -> ours and its secret (None: not ours), per request
    for item in items:
        subscription, reason = await _check(sink, tenant.name, item, known)
        if subscription is None:
            sink.metrics.notifications_rejected.labels(tenant.name, reason).inc()
            continue
        event = item.get("lifecycleEvent")
        if event is not None:
            sink.metrics.notifications_received.labels(tenant.name, "lifecycle").inc()
            log.info("lifecycle notification", tenant=tenant.name, lifecycle=str(event)[:40], resource=subscription.resource)
            if event in ("reauthorizationRequired", "subscriptionRemoved"):
                state = REAUTHORIZE if event == "reauthorizationRequired" else REMOVED
                await sink.store.put_subscription(tenant.name, replace(subscription, state=state, reason=str(event)))
                marks.add(("keep", None))  # the owner's keeper acts at once
            if event in ("subscriptionRemoved", "missed"):
                marks.add((subscription.kind, subscription.mailbox))  # what may have been missed: read it
            continue
        sink.metrics.notifications_received.labels(tenant.name, subscription.kind).inc()
        if subscription.kind == "group" and _object_id(item) not in tenant.groups:
            continue  # one /groups subscription for the tenant: only the configured groups matter
        marks.add((subscription.kind, subscription.mailbox))
    return marks


async def _check(sink: NotificationSink, tenant: str, item: Any, known: dict[str, Known | None]
                 ) -> tuple[StoredSubscription | None, str]:
    """The subscription ``item`` comes from when it is one of this tenant's and carries its
    secret; else None and why not. Each subscription is looked up and its secret unsealed once
    per post (a post carries up to 1,000 items, mostly of one subscription)."""
    if not isinstance(item, dict) or not isinstance(item.get("subscriptionId"), str):
        return None, "malformed"
    subscription_id = item["subscriptionId"]
    if subscription_id not in known:
        if len(known) >= 100:  # a post naming many subscriptions is not Graph's
            return None, "unknown"
        found = await sink.store.subscription(tenant, subscription_id) if len(subscription_id) <= 100 else None
        known[subscription_id] = (found, sink.sealer.open(found.sealed_state)) if found is not None else None
    entry = known[subscription_id]
    if entry is None:
        return None, "unknown"
    subscription, secret = entry
    offered = item.get("clientState")
    if not isinstance(offered, str) or not hmac.compare_digest(offered.encode("utf-8", "replace"), secret):
        return None, "client_state"
    return subscription, ""


def _object_id(item: dict[str, Any]) -> str | None:
    data = item.get("resourceData")
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
