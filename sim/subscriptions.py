"""Graph change notifications in the simulator: ``/subscriptions`` (create
with the validation handshake, renew, reauthorize, delete, list, expiry),
notifications POSTed to the registered URL when the tenant changes, and
lifecycle events sent on demand.

Deliveries are queued when the world changes and sent by :meth:`deliver`
(a test awaits it; ``auto_deliver`` sends them at once, as Graph does, for
the benchmarks). One deliberate difference from Graph: a ``notificationUrl``
on a loopback address may be http, so the tests need no TLS server of the
daemon's; any other host must be https, as Graph requires
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks,
"notificationUrl ... must be HTTPS").
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from sim.answers import SimResponse, graph_error
from sim.calendar import parse_instant
from sim.store import SimTenant

# Maximum lifetimes, in minutes (https://learn.microsoft.com/graph/api/resources/subscription,
# "Subscription lifetime"): users and groups 41,760 (under 29 days), Outlook contacts and events 10,080.
DIRECTORY_MAX_MINUTES = 41760
OUTLOOK_MAX_MINUTES = 10080
# Users and groups: at most 100 subscriptions per app and tenant (the same page, "Latency, limits").
DIRECTORY_LIMIT = 100
# "Respond within 10 seconds" (change-notifications-delivery-webhooks), timed on the tenant's clock: a test's
# ManualClock moves only when the test says, so a loaded machine answering slowly is not a late receiver.
VALIDATION_TIMEOUT = 10.0
NEVER_ANSWERS = aiohttp.ClientTimeout(total=300)  # wall time: only a receiver that hangs, as a guard
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


@dataclass
class SimSubscription:
    id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "resource": self.resource, "changeType": self.change_type,
                "notificationUrl": self.notification_url, "lifecycleNotificationUrl": self.lifecycle_url,
                "clientState": self.client_state, "expirationDateTime": _iso(self.expires),
                "applicationId": "sim-app", "creatorId": "sim-creator"}


@dataclass
class Delivery:
    url: str
    payload: dict[str, Any]
    status: int | None = None  # the receiver's answer, once sent


@dataclass
class SubscriptionsApi:
    tenant: SimTenant
    tenant_id: str = "sim-tenant"
    auto_deliver: bool = False
    subscriptions: dict[str, SimSubscription] = field(default_factory=dict)
    pending: list[Delivery] = field(default_factory=list)
    sent: list[Delivery] = field(default_factory=list)
    validations: list[tuple[str, int]] = field(default_factory=list)  # (url, status) of each handshake
    _tasks: set[asyncio.Task[list[Delivery]]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.tenant.listeners.append(self._changed)

    # --- the REST side ---

    async def handle(self, method: str, path: str, body: Any) -> SimResponse:
        parts = path.strip("/").split("/")
        if parts == ["subscriptions"]:
            if method == "POST":
                return await self._create(body)
            if method == "GET":  # https://learn.microsoft.com/graph/api/subscription-list
                return SimResponse(200, {"value": [s.as_json() for s in self._live()]})
        elif len(parts) >= 2:
            subscription = self.subscriptions.get(parts[1])
            if subscription is None or subscription.expires <= self.tenant.clock.now():
                return graph_error(404, "ResourceNotFound", "The object was not found.")
            if len(parts) == 3 and parts[2] == "reauthorize" and method == "POST":
                return SimResponse(204)  # https://learn.microsoft.com/graph/api/subscription-reauthorize
            if len(parts) == 2 and method == "PATCH":
                return self._renew(subscription, body)
            if len(parts) == 2 and method == "DELETE":  # https://learn.microsoft.com/graph/api/subscription-delete
                del self.subscriptions[subscription.id]
                return SimResponse(204)
            if len(parts) == 2 and method == "GET":
                return SimResponse(200, subscription.as_json())
        return graph_error(405, "Request_BadRequest", f"{method} is not supported here")

    async def _create(self, body: Any) -> SimResponse:
        """https://learn.microsoft.com/graph/api/subscription-post-subscriptions: the resource and
        its lifetime are checked, then both URLs are validated before the subscription exists."""
        if not isinstance(body, dict):
            return graph_error(400, "InvalidRequest", "Invalid subscription payload.")
        resource, url = str(body.get("resource", "")), str(body.get("notificationUrl", ""))
        lifecycle = body.get("lifecycleNotificationUrl")
        maximum = _max_minutes(resource)
        if maximum is None:
            return graph_error(400, "InvalidRequest", f"Resource '{resource}' is not supported.")
        for candidate in filter(None, (url, lifecycle)):
            if not _acceptable_url(str(candidate)):
                return graph_error(400, "InvalidRequest", "The Notification Url must use https.")
        expires = _parse_time(body.get("expirationDateTime"))
        if expires is None or not self.tenant.clock.now() < expires <= self._latest(maximum):
            return graph_error(400, "InvalidRequest",
                               f"Subscription expiration can only be {maximum} minutes in the future.")
        if maximum == DIRECTORY_MAX_MINUTES and sum(
                _max_minutes(s.resource) == DIRECTORY_MAX_MINUTES for s in self._live()) >= DIRECTORY_LIMIT:
            return graph_error(403, "ExtensionError", f"Operation blocked: the limit of {DIRECTORY_LIMIT} "
                                                      "subscriptions per app and tenant is reached.")
        for candidate in filter(None, (url, lifecycle)):
            if not await self._validate(str(candidate)):
                return graph_error(400, "ValidationError", "Subscription validation request failed. Notification "
                                                           "endpoint must respond with 200 OK to validation request.")
        state = body.get("clientState")
        subscription = SimSubscription(str(uuid.uuid4()), resource.strip("/"), str(body.get("changeType", "")), url,
                                       str(lifecycle) if lifecycle else None, str(state) if state else None, expires)
        self.subscriptions[subscription.id] = subscription
        return SimResponse(201, subscription.as_json())

    def _renew(self, subscription: SimSubscription, body: Any) -> SimResponse:
        """https://learn.microsoft.com/graph/api/subscription-update: only the expiry changes."""
        expires = _parse_time(body.get("expirationDateTime") if isinstance(body, dict) else None)
        maximum = _max_minutes(subscription.resource) or OUTLOOK_MAX_MINUTES
        if expires is None or not self.tenant.clock.now() < expires <= self._latest(maximum):
            return graph_error(400, "InvalidRequest",
                               f"Subscription expiration can only be {maximum} minutes in the future.")
        subscription.expires = expires
        return SimResponse(200, subscription.as_json())

    async def _validate(self, url: str) -> bool:
        """POST ``url?validationToken=...`` with an empty text/plain body; the receiver must answer
        200, text/plain, the decoded token, within 10 s (change-notifications-delivery-webhooks)."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {secrets.token_hex(8)}"
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token)}"
        sent = self.tenant.clock.now()
        try:
            async with aiohttp.ClientSession() as session, session.post(
                    target, data=b"", headers={"Content-Type": "text/plain; charset=utf-8"},
                    timeout=NEVER_ANSWERS) as response:
                text = await response.text()
                status = response.status
                plain = response.content_type == "text/plain"
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if self._late(sent):
            status = 0
        if status == 0:
            self.validations.append((url, 0))
            return False
        self.validations.append((url, status))
        return status == 200 and plain and text == token

    # --- notifications ---

    def _changed(self, resource: str, change_type: str, object_id: str) -> None:
        """The tenant changed: one notification per subscription on that resource."""
        for subscription in self._live():
            if subscription.resource.lower() == resource.lower() and change_type in subscription.change_type.split(","):
                self._queue(subscription.notification_url, {"value": [self._item(subscription, change_type, object_id)]})

    def _item(self, subscription: SimSubscription, change_type: str, object_id: str) -> dict[str, Any]:
        """A basic notification (https://learn.microsoft.com/graph/api/resources/changenotification):
        no resource data beyond the id; ``clientState`` as given at creation."""
        return {"subscriptionId": subscription.id, "subscriptionExpirationDateTime": _iso(subscription.expires),
                "changeType": change_type, "resource": f"{subscription.resource}/{object_id}",
                "resourceData": {"id": object_id, "@odata.id": f"{subscription.resource}/{object_id}"},
                "clientState": subscription.client_state, "tenantId": self.tenant_id}

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """Send a lifecycle event (https://learn.microsoft.com/graph/change-notifications-lifecycle-events);
        ``subscriptionRemoved`` also removes the subscription, as Graph has by then."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(event)
        subscription = self.subscriptions[subscription_id]
        if subscription.lifecycle_url is None:
            return  # created without a lifecycleNotificationUrl: no lifecycle events, ever
        item = {"subscriptionId": subscription.id, "subscriptionExpirationDateTime": _iso(subscription.expires),
                "tenantId": self.tenant_id, "clientState": subscription.client_state, "lifecycleEvent": event}
        if event == "subscriptionRemoved":
            del self.subscriptions[subscription_id]
        self._queue(subscription.lifecycle_url, {"value": [item]})

    def forge(self, url: str, items: list[dict[str, Any]]) -> None:
        """Queue a POST of any content (a forger's, or a replay)."""
        self._queue(url, {"value": items})

    def drop_pending(self) -> int:
        """Lose every queued notification (as a failed delivery Graph gave up on)."""
        lost = len(self.pending)
        self.pending.clear()
        return lost

    def _queue(self, url: str, payload: dict[str, Any]) -> None:
        self.pending.append(Delivery(url, payload))
        if self.auto_deliver:
            task = asyncio.ensure_future(self.deliver())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def deliver(self) -> list[Delivery]:
        """Send every queued notification, one POST each; returns them with their answers."""
        batch, self.pending = self.pending, []
        async with aiohttp.ClientSession() as session:
            for delivery in batch:
                sent = self.tenant.clock.now()
                try:
                    async with session.post(delivery.url, data=json.dumps(delivery.payload).encode(),
                                            headers={"Content-Type": "application/json"},
                                            timeout=NEVER_ANSWERS) as response:
                        delivery.status = 0 if self._late(sent) else response.status
                except (aiohttp.ClientError, TimeoutError):
                    delivery.status = 0
        self.sent.extend(batch)
        return batch

    def _late(self, sent: datetime) -> bool:
        """The receiver answered after Graph's deadline (on the tenant's clock): Graph counts it as no answer."""
        return (self.tenant.clock.now() - sent).total_seconds() > VALIDATION_TIMEOUT

    def _live(self) -> list[SimSubscription]:
        now = self.tenant.clock.now()
        return [s for s in self.subscriptions.values() if s.expires > now]

    def _latest(self, minutes: int) -> datetime:
        return self.tenant.clock.now() + timedelta(minutes=minutes)


def _max_minutes(resource: str) -> int | None:
    parts = resource.strip("/").lower().split("/")
    if parts in (["users"], ["groups"]):
        return DIRECTORY_MAX_MINUTES
    if len(parts) == 3 and parts[0] == "users" and parts[2] in ("contacts", "events"):
        return OUTLOOK_MAX_MINUTES
    return None


def _acceptable_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)


def _parse_time(value: Any) -> datetime | None:
    """An expirationDateTime; a missing offset or zone is refused (Graph's are UTC, written with Z)."""
    if not isinstance(value, str) or not value.endswith(("Z", "+00:00")):
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
