"""A tenant's Graph subscriptions kept as its configuration wants them:
created (spread over rounds, within Graph's limits), renewed well before
they expire, reauthorized or recreated after a lifecycle event, and deleted
when their kind is turned off (``[tenants.notifications]``).

Subscriptions: ``/users`` (users enabled), one ``/groups`` (groups
configured; filtered to the configured groups on arrival, since Graph allows
100 directory subscriptions per app and tenant), and per mailbox its
``contacts`` and ``events`` (application mode: Graph lets a delegated token
subscribe to the owner's mailbox only). Each has a random ``clientState``,
stored sealed; the expiry Graph returns is the one kept.

When Graph cannot validate the public address (the handshake fails), the
keeper records why (``status``, the page and a metric show it), creates
nothing more, and tries again after :data:`HANDSHAKE_RETRY_SECONDS`;
polling and the schedule go on meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import quote

from daemon.config import TenantConfig
from daemon.errors import GraphError, GraphNotFound
from daemon.graph.client import GraphClient
from daemon.logging import get_logger
from daemon.redact import remember_secret
from daemon.sync.kinds import BUSY, CONTACT
from daemon.sync.user_scope import stored_shared_mailboxes
from state.notify_store import ACTIVE, REAUTHORIZE, REMOVED, NotifyStore, StoredSubscription
from state.sealing import Sealer
from state.sync_store import SyncStore

log = get_logger(__name__)

# Lifetimes asked for, under Graph's maxima (users and groups 41,760 min, Outlook 10,080 min:
# https://learn.microsoft.com/graph/api/resources/subscription#subscription-lifetime), with a margin.
DIRECTORY_MINUTES = 41_000
OUTLOOK_MINUTES = 10_000
RENEW_WHEN_LEFT = 0.5  # renew once less than half the lifetime is left: days before expiry
CREATES_PER_ROUND = 1000  # 20k mailbox subscriptions spread over 20 rounds (each run, and every 5 minutes)
# Each create makes Graph validate our two addresses (notifications and lifecycle), two requests to our own
# rate-limited endpoint (100 a second): at most CREATES_PER_SECOND, so a round's handshakes take half its rate
# and leave the rest to notifications (a 429 there is a failed handshake, and an hour without notifications).
CREATES_PER_SECOND = 25
HANDSHAKE_RETRY_SECONDS = 3600.0
NOTIFY_PATH = "/api/graph/notifications/"
LIFECYCLE_PATH = "/api/graph/lifecycle/"
USER, GROUP = "user", "group"  # the directory kinds; a mailbox's are the sync kinds CONTACT and BUSY


@dataclass(frozen=True)
class Wanted:
    kind: str
    resource: str
    change_type: str
    minutes: int
    mailbox: str | None = None


@dataclass
class KeeperRound:
    created: int = 0
    renewed: int = 0
    deleted: int = 0
    reauthorized: int = 0
    handshake_failed: str | None = None  # Graph's reason, when it could not reach us
    next_at: float = math.inf  # when the next round has work: a renewal, creates left, a handshake retry
    covered: frozenset[str] = frozenset()  # kinds whose every wanted subscription is active (pushed)


def notification_urls(public_url: str, tenant: str) -> tuple[str, str]:
    name = quote(tenant, safe="")
    return f"{public_url}{NOTIFY_PATH}{name}", f"{public_url}{LIFECYCLE_PATH}{name}"


async def wanted_subscriptions(tenant: TenantConfig, sync_store: SyncStore) -> dict[str, Wanted]:
    """resource -> what the tenant's enabled kinds need."""
    wanted: dict[str, Wanted] = {}
    if tenant.users.enabled:
        wanted["users"] = Wanted(USER, "users", "updated,deleted", DIRECTORY_MINUTES)
    if tenant.groups:
        wanted["groups"] = Wanted(GROUP, "groups", "updated,deleted", DIRECTORY_MINUTES)
    if tenant.auth_mode != "application":
        return wanted
    mailboxes: set[str] = set()
    if tenant.personal_contacts.enabled or tenant.events.enabled:
        mailboxes = {user_id for user_id, _, _ in await sync_store.active_users(tenant.name)}
    shared = set(await stored_shared_mailboxes(tenant, sync_store))
    for user_id in sorted(mailboxes | shared):
        path = f"users/{user_id}"
        if (tenant.personal_contacts.enabled and user_id in mailboxes) or user_id in shared:
            wanted[f"{path}/contacts"] = Wanted(CONTACT, f"{path}/contacts", "created,updated,deleted",
                                                OUTLOOK_MINUTES, user_id)
        if tenant.events.enabled and user_id in mailboxes and user_id not in shared:
            wanted[f"{path}/events"] = Wanted(BUSY, f"{path}/events", "created,updated,deleted", OUTLOOK_MINUTES,
                                              user_id)
    return wanted


class SubscriptionKeeper:
    """One tenant's subscriptions, one :meth:`keep` round at a time (the owner's)."""

    def __init__(self, tenant: TenantConfig, public_url: str, graph: GraphClient, store: NotifyStore,
                 sync_store: SyncStore, sealer: Sealer, now: Callable[[], float],
                 pause: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.tenant = tenant
        self.notify_url, self.lifecycle_url = notification_urls(public_url, tenant.name)
        self.graph = graph
        self.store = store
        self.sync_store = sync_store
        self.sealer = sealer
        self.now = now
        self.pause = pause

    async def keep(self, *, enabled: bool = True) -> KeeperRound:
        """One round: delete the unwanted, act on lifecycle marks, renew, then create (spread)."""
        name, round_ = self.tenant.name, KeeperRound()
        wanted = await wanted_subscriptions(self.tenant, self.sync_store) if enabled else {}
        stored = {s.resource: s for s in await self.store.subscriptions(name)}
        for resource, subscription in sorted(stored.items()):
            if resource not in wanted:
                await self._delete(subscription)
                round_.deleted += 1
            elif subscription.state == REMOVED:  # Graph removed it: a new one (and the read was marked due)
                await self.store.drop_subscription(name, subscription.id)
                del stored[resource]
            elif subscription.state == REAUTHORIZE:
                await self._reauthorize(subscription)
                round_.reauthorized += 1
            elif subscription.expires_at - self.now() < RENEW_WHEN_LEFT * wanted[resource].minutes * 60:
                await self._renew(subscription, wanted[resource])
                round_.renewed += 1
        missing = [w for r, w in sorted(wanted.items()) if r not in stored]
        if not (missing and await self._handshake_waits()):
            for index, want in enumerate(missing[:CREATES_PER_ROUND]):
                if index and index % CREATES_PER_SECOND == 0:
                    await self.pause(1.0)
                failure = await self._create(want)
                if failure is not None:
                    round_.handshake_failed = failure
                    break
                round_.created += 1
        kept = [s for s in await self.store.subscriptions(name) if s.resource in wanted]
        active = {s.resource for s in kept if s.state == ACTIVE}
        round_.covered = frozenset(w.kind for w in wanted.values()) - {w.kind for r, w in wanted.items()
                                                                       if r not in active}
        round_.next_at = await self._next_round(wanted, kept, left=len(missing) - round_.created,
                                                created=round_.created)
        return round_

    async def _next_round(self, wanted: dict[str, Wanted], kept: list[StoredSubscription], *, left: int,
                          created: int) -> float:
        """When a round next has work, unless a run changes what is wanted: at once while creates are
        left (spread over rounds), an hour on when none could be made (or Graph could not reach us),
        else the earliest renewal."""
        if left > 0:
            last = await self.store.handshake(self.tenant.name)
            if last is not None and not last.ok:
                return last.at + HANDSHAKE_RETRY_SECONDS
            return self.now() if created else self.now() + HANDSHAKE_RETRY_SECONDS
        return min((s.expires_at - RENEW_WHEN_LEFT * wanted[s.resource].minutes * 60 for s in kept), default=math.inf)

    async def _handshake_waits(self) -> bool:
        """A failed handshake is tried again only after a while (polling goes on meanwhile)."""
        last = await self.store.handshake(self.tenant.name)
        return last is not None and not last.ok and self.now() - last.at < HANDSHAKE_RETRY_SECONDS

    async def _create(self, want: Wanted) -> str | None:
        """Create one subscription; returns why Graph refused our address, if it did."""
        client_state = secrets.token_urlsafe(32)  # at most 128 characters (subscription resource)
        remember_secret(client_state, issued=True)
        body = {"changeType": want.change_type, "notificationUrl": self.notify_url,
                "lifecycleNotificationUrl": self.lifecycle_url, "resource": want.resource,
                "expirationDateTime": _iso(self.now() + want.minutes * 60), "clientState": client_state}
        try:
            response = await self.graph.request("POST", "/subscriptions", json_body=body)
        except GraphError as err:
            if err.status == 400 and "validation" in str(err).lower():
                reason = f"Graph could not validate {self.notify_url}: {err}"
                log.warning("change notifications unavailable: Graph cannot reach the public address; polling goes on",
                            tenant=self.tenant.name, error=str(err))
                await self.store.set_handshake(self.tenant.name, False, reason)
                return reason
            log.warning("could not create a subscription", tenant=self.tenant.name, resource=want.resource,
                        error=str(err))
            return None
        data = response.body if isinstance(response.body, dict) else {}
        expires = _parse(data.get("expirationDateTime")) or self.now() + want.minutes * 60
        await self.store.put_subscription(self.tenant.name, StoredSubscription(
            str(data.get("id", "")), want.kind, want.resource, want.mailbox, expires,
            self.sealer.seal(client_state.encode())))
        await self.store.set_handshake(self.tenant.name, True)
        return None

    async def _renew(self, subscription: StoredSubscription, want: Wanted) -> None:
        body = {"expirationDateTime": _iso(self.now() + want.minutes * 60)}
        try:
            response = await self.graph.request("PATCH", f"/subscriptions/{quote(subscription.id)}", json_body=body)
        except GraphNotFound:  # expired or removed meanwhile: created again next round
            await self.store.drop_subscription(self.tenant.name, subscription.id)
            return
        except GraphError as err:
            log.warning("could not renew a subscription", tenant=self.tenant.name, resource=subscription.resource,
                        error=str(err))
            return
        data = response.body if isinstance(response.body, dict) else {}
        expires = _parse(data.get("expirationDateTime")) or self.now() + want.minutes * 60  # Graph's, if given
        await self.store.put_subscription(self.tenant.name, replace(subscription, expires_at=expires))

    async def _reauthorize(self, subscription: StoredSubscription) -> None:
        """https://learn.microsoft.com/graph/api/subscription-reauthorize (the token may have been refreshed)."""
        try:
            await self.graph.request("POST", f"/subscriptions/{quote(subscription.id)}/reauthorize")
        except GraphNotFound:
            await self.store.drop_subscription(self.tenant.name, subscription.id)
            return
        except GraphError as err:
            log.warning("could not reauthorize a subscription", tenant=self.tenant.name, error=str(err))
            return
        await self.store.put_subscription(self.tenant.name, replace(subscription, state=ACTIVE))

    async def _delete(self, subscription: StoredSubscription) -> None:
        await delete_subscription(self.graph, self.store, self.tenant.name, subscription)


async def delete_subscription(graph: GraphClient, store: NotifyStore, tenant: str,
                              subscription: StoredSubscription) -> None:
    """Delete it at Graph, then forget it (a refusal leaves it to expire; its notifications are dropped)."""
    try:
        await graph.request("DELETE", f"/subscriptions/{quote(subscription.id)}")
    except GraphNotFound:
        pass
    except GraphError as err:
        log.warning("could not delete a subscription", tenant=tenant, error=str(err))
    await store.drop_subscription(tenant, subscription.id)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parse(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
