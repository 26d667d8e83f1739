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
nothing more, and tries again after :func:`handshake_retry_seconds`: 5
minutes after the first failure, doubling with each failure in a row up to
the hour, so one failed handshake (a 429 of our own endpoint while Graph
validates, a proxy restarting) costs minutes of notifications, not an hour,
while an address Graph never reaches is tried hourly. The failures in a row
are counted in memory (``handshake_failures``, kept by the tenant's owner):
after a restart, or when another daemon takes the tenant over, the count
starts again and the first retry comes 5 minutes after the stored failure,
which is one create request, and is what an operator who just fixed the
proxy and restarted wants. Polling and the schedule go on meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import quote

from daemon.config import TenantConfig
from daemon.errors import GraphError, GraphNotFound
from daemon.graph.client import GraphClient
from daemon.logging import get_logger
from daemon.redact import remember_secret
from daemon.sync.kinds import BUSY, CONTACT
from daemon.sync.user_scope import stored_shared_mailboxes
from state.notify_store import (
    ACTIVE,
    REAUTHORIZE,
    REMOVED,
    Handshake,
    KeptSubscription,
    NotifyStore,
    StoredSubscription,
)
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
HANDSHAKE_RETRY_FIRST_SECONDS = 300.0  # after one failed handshake
HANDSHAKE_RETRY_MAX_SECONDS = 3600.0  # doubling up to this, after failures in a row
CREATE_RETRY_SECONDS = 3600.0  # Graph reached us but created nothing (other errors): the next try
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
    states: dict[str, int] = field(default_factory=dict)  # the tenant's subscriptions by state, after it
    reachable: bool | None = None  # the handshake's last outcome (None: never tried)


def handshake_retry_seconds(failures: int) -> float:
    """How long after the last of ``failures`` failed handshakes in a row the next is tried."""
    return min(HANDSHAKE_RETRY_MAX_SECONDS, HANDSHAKE_RETRY_FIRST_SECONDS * 2.0 ** min(max(0, failures - 1), 16))


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
                 pause: Callable[[float], Awaitable[None]] = asyncio.sleep, *, handshake_failures: int = 0) -> None:
        self.tenant = tenant
        self.handshake_failures = handshake_failures  # in a row, before this round; updated by it
        self.notify_url, self.lifecycle_url = notification_urls(public_url, tenant.name)
        self.graph = graph
        self.store = store
        self.sync_store = sync_store
        self.sealer = sealer
        self.now = now
        self.pause = pause

    async def keep(self, *, enabled: bool = True) -> KeeperRound:
        """One round: delete the unwanted, act on lifecycle marks, renew, then create (spread).

        It reads the tenant's subscriptions once (:meth:`NotifyStore.kept`, in expiry order, without
        their secrets) and the handshake once, and follows its own writes in memory, so what it
        returns (coverage, the next round, the gauges' counts) costs no second read."""
        name, round_ = self.tenant.name, KeeperRound()
        wanted = await wanted_subscriptions(self.tenant, self.sync_store) if enabled else {}
        stored = {s.resource: s for s in await self.store.kept(name)}
        for resource, subscription in list(stored.items()):  # the first to expire first
            if resource not in wanted:
                await delete_subscription(self.graph, self.store, name, subscription.id)
                del stored[resource]
                round_.deleted += 1
            elif subscription.state == REMOVED:  # Graph removed it: a new one (and the read was marked due)
                await self.store.drop_subscription(name, subscription.id)
                del stored[resource]
            elif subscription.state == REAUTHORIZE:
                self._follow(stored, resource, await self._reauthorize(subscription))
                round_.reauthorized += 1
            elif subscription.expires_at - self.now() < RENEW_WHEN_LEFT * wanted[resource].minutes * 60:
                self._follow(stored, resource, await self._renew(subscription, wanted[resource]))
                round_.renewed += 1
        missing = [w for r, w in sorted(wanted.items()) if r not in stored]
        last = await self.store.handshake(name)
        if not (missing and self._handshake_waits(last)):
            for index, want in enumerate(missing[:CREATES_PER_ROUND]):
                if index and index % CREATES_PER_SECOND == 0:
                    await self.pause(1.0)
                created = await self._create(want)
                if isinstance(created, str):
                    round_.handshake_failed = created
                    last = Handshake(False, self.now(), created)
                    break
                if created is not None:
                    stored[want.resource] = created
                    last = Handshake(True, self.now(), None)
                round_.created += 1
        round_.states = dict(Counter(s.state for s in stored.values()))
        round_.reachable = None if last is None else last.ok
        active = {r for r, s in stored.items() if s.state == ACTIVE}
        round_.covered = frozenset(w.kind for w in wanted.values()) - {w.kind for r, w in wanted.items()
                                                                       if r not in active}
        round_.next_at = self._next_round(wanted, list(stored.values()), last, left=len(missing) - round_.created,
                                          created=round_.created)
        return round_

    @staticmethod
    def _follow(stored: dict[str, KeptSubscription], resource: str, now: KeptSubscription | None) -> None:
        """What a renewal or a reauthorization left of a subscription (None: Graph no longer has it)."""
        if now is None:
            del stored[resource]
        else:
            stored[resource] = now

    def _next_round(self, wanted: dict[str, Wanted], kept: list[KeptSubscription], last: Handshake | None, *,
                    left: int, created: int) -> float:
        """When a round next has work, unless a run changes what is wanted: at once while creates are
        left (spread over rounds), the handshake's retry when Graph could not reach us, an hour on when
        none could be made otherwise, else the earliest renewal."""
        if left > 0:
            if last is not None and not last.ok:
                return last.at + self._handshake_retry()
            return self.now() if created else self.now() + CREATE_RETRY_SECONDS
        return min((s.expires_at - RENEW_WHEN_LEFT * wanted[s.resource].minutes * 60 for s in kept), default=math.inf)

    def _handshake_waits(self, last: Handshake | None) -> bool:
        """A failed handshake is tried again only after a while (polling goes on meanwhile)."""
        return last is not None and not last.ok and self.now() - last.at < self._handshake_retry()

    def _handshake_retry(self) -> float:
        return handshake_retry_seconds(max(1, self.handshake_failures))  # a stored failure counts, after a restart

    async def _create(self, want: Wanted) -> KeptSubscription | str | None:
        """Create one subscription: what is stored of it, why Graph refused our address (the
        handshake failed), or None when Graph refused it for another reason."""
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
                self.handshake_failures += 1
                return reason
            log.warning("could not create a subscription", tenant=self.tenant.name, resource=want.resource,
                        error=str(err))
            return None
        data = response.body if isinstance(response.body, dict) else {}
        expires = _parse(data.get("expirationDateTime")) or self.now() + want.minutes * 60
        subscription = StoredSubscription(str(data.get("id", "")), want.kind, want.resource, want.mailbox, expires,
                                          self.sealer.seal(client_state.encode()))
        await self.store.put_subscription(self.tenant.name, subscription)
        await self.store.set_handshake(self.tenant.name, True)
        self.handshake_failures = 0
        return KeptSubscription(subscription.id, want.kind, want.resource, subscription.state, expires)

    async def _renew(self, subscription: KeptSubscription, want: Wanted) -> KeptSubscription | None:
        body = {"expirationDateTime": _iso(self.now() + want.minutes * 60)}
        try:
            response = await self.graph.request("PATCH", f"/subscriptions/{quote(subscription.id)}", json_body=body)
        except GraphNotFound:  # expired or removed meanwhile: created again next round
            await self.store.drop_subscription(self.tenant.name, subscription.id)
            return None
        except GraphError as err:
            log.warning("could not renew a subscription", tenant=self.tenant.name, resource=subscription.resource,
                        error=str(err))
            return subscription
        data = response.body if isinstance(response.body, dict) else {}
        expires = _parse(data.get("expirationDateTime")) or self.now() + want.minutes * 60  # Graph's, if given
        await self.store.renewed(self.tenant.name, subscription.id, expires)
        return replace(subscription, expires_at=expires)

    async def _reauthorize(self, subscription: KeptSubscription) -> KeptSubscription | None:
        """https://learn.microsoft.com/graph/api/subscription-reauthorize (the token may have been refreshed)."""
        try:
            await self.graph.request("POST", f"/subscriptions/{quote(subscription.id)}/reauthorize")
        except GraphNotFound:
            await self.store.drop_subscription(self.tenant.name, subscription.id)
            return None
        except GraphError as err:
            log.warning("could not reauthorize a subscription", tenant=self.tenant.name, error=str(err))
            return subscription
        await self.store.reactivated(self.tenant.name, subscription.id)
        return replace(subscription, state=ACTIVE)


async def delete_subscription(graph: GraphClient, store: NotifyStore, tenant: str, subscription_id: str) -> None:
    """Delete it at Graph, then forget it (a refusal leaves it to expire; its notifications are dropped)."""
    try:
        await graph.request("DELETE", f"/subscriptions/{quote(subscription_id)}")
    except GraphNotFound:
        pass
    except GraphError as err:
        log.warning("could not delete a subscription", tenant=tenant, error=str(err))
    await store.drop_subscription(tenant, subscription_id)


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
