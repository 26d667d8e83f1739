"""Change notifications in the running daemon: what the endpoint persists
wakes the tenant's reader here, or, when another daemon of a shared state
owns the tenant, is forwarded to that owner (the forwarding Sync now uses);
the owner drains the marks, debounced, into reads through the one pipeline
entry point (a mailbox's mark reads that mailbox alone), and keeps the
tenant's subscriptions after a run that changed what is synced, and
otherwise only when a round has work (renewals, creates spread over rounds,
a retry), checked every :data:`KEEP_SECONDS` (which also sweeps marks whose
forwarding was lost): a quiet tenant's steady state costs no Graph request.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from daemon.auth.states import DISCONNECTED
from daemon.config import Config, TenantConfig
from daemon.errors import M365SyncError, log_fields
from daemon.graph.client import GraphClient, TokenProvider
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.notify.debounce import DEFAULT_WINDOW_SECONDS, Debouncer, reads_of
from daemon.notify.mode import notifications_wanted
from daemon.notify.subscriptions import KeeperRound, SubscriptionKeeper, delete_subscription
from daemon.scheduler import SchedulerClock
from daemon.sync.kinds import BUSY
from state.notify_store import NotifyStore
from state.sealing import Sealer
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

KEEP_SECONDS = 300.0


@dataclass(frozen=True)
class Kept:
    """A tenant's last keeper round: the settings it kept to, and when the next one has work."""

    settings: tuple[object, ...]
    next_at: float
    covered: frozenset[str] = frozenset()  # kinds whose every subscription is active after it


@dataclass(frozen=True)
class Daemon:
    """What notifications need of the rest of the daemon (the supervisor answers)."""

    config: Callable[[], Config]
    holds: Callable[[str], bool]  # this daemon owns the tenant
    forward: Callable[[str], Awaitable[bool]]  # tell the owner; False: no owner now
    graph: Callable[[str], Awaitable[GraphClient | None]]  # None: not now (not owner, not authorized)
    # (tenant, kinds, trigger, mailboxes or None for every one) -> result
    read: Callable[[str, frozenset[str], str, frozenset[str] | None], Awaitable[str]]
    shared: bool = False  # a state several daemons share, each with its own configuration file


class Notifications:
    def __init__(self, daemon: Daemon, store: NotifyStore, tenants: Store, sync_store: SyncStore, sealer: Sealer,
                 metrics: Metrics, clock: SchedulerClock, *, window: float = DEFAULT_WINDOW_SECONDS) -> None:
        self.daemon = daemon
        self.tenants = tenants
        self.store = store
        self.sync_store = sync_store
        self.sealer = sealer
        self.metrics = metrics
        self.clock = clock
        self.debouncer = Debouncer(clock, self.drain, window)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._kept: dict[str, Kept] = {}  # per tenant: what its last keeper round was made from, and its next
        self._rounds: dict[str, asyncio.Lock] = {}
        self._handshake_failures: dict[str, int] = {}  # per tenant: failed handshakes in a row (the retry's backoff)

    # --- the endpoint's side (NotificationSink) ---

    def tenant(self, name: str) -> TenantConfig | None:
        config = self.daemon.config()
        tenant = config.find_tenant(name)
        return tenant if tenant is not None and notifications_wanted(config, tenant) else None

    async def persisted(self, tenant: str) -> None:
        if self.daemon.holds(tenant):
            self.debouncer.wake(tenant)
            return
        try:
            sent = await self.daemon.forward(tenant)
        except Exception as err:  # the marks stay persisted: the owner's sweep reads them
            log.warning("could not tell the tenant's owner about a notification", tenant=tenant, **log_fields(err))
            sent = False
        if not sent:
            log.info("no daemon owns the tenant now; its notified reads wait in the state", tenant=tenant)

    def notified(self, tenant: str) -> None:
        """Another daemon persisted notifications of a tenant this one owns."""
        if self.daemon.holds(tenant):
            self.debouncer.wake(tenant)

    def run_finished(self, tenant: str, changed: bool = True) -> None:
        """A run of an owned tenant ended: its subscriptions follow what it now syncs (the first run
        with a public address creates them; later ones add the new mailboxes). A run that changed no
        user (the users poll every minute, a notified contact) starts no round unless one is due anyway."""
        if not changed and not self._keep_due(tenant):
            return
        task = asyncio.ensure_future(self._keep_quietly(tenant, changed))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _keep_due(self, tenant: str) -> bool:
        """Whether a keeper round has work without a change in the synced objects: the first since
        this daemon owns the tenant, new settings, creates left to spread, a renewal or a retry."""
        kept = self._kept.get(tenant)
        return kept is None or kept.settings != self._settings(tenant) or self.clock.time() >= kept.next_at

    def pushed(self, tenant: str, kind: str) -> bool:
        """Every ``kind`` subscription the tenant wants is active (as of its last keeper round here):
        its poll may fall back to the backstop's interval."""
        kept = self._kept.get(tenant)
        return kept is not None and kind in kept.covered and kept.settings == self._settings(tenant)

    def _settings(self, tenant: str) -> tuple[object, ...]:
        config = self.daemon.config()
        return config.server.public_url, config.find_tenant(tenant)

    async def _keep_quietly(self, tenant: str, changed: bool) -> None:
        try:
            async with self._round_lock(tenant):
                if not changed and not self._keep_due(tenant):
                    return  # the round this one waited for did it
                if self.tenant(tenant) is None and not await self.store.has_subscriptions(tenant):
                    self._kept[tenant] = Kept(self._settings(tenant), math.inf)  # until the settings change
                    return  # notifications off, and nothing to delete: no work after the run
                await self._keep(tenant)
        except Exception as err:  # the next round tries again
            log.warning("could not keep the change-notification subscriptions", tenant=tenant, **log_fields(err))

    async def tenants_removed(self, names: list[str]) -> None:
        """A reload removes (or disables) these tenants: the subscriptions of those this daemon owns are
        deleted at Graph rather than left to expire (days), while their token can still be had: one is
        taken now, before the new configuration (without their settings) applies; the deletes follow."""
        for name in names:
            try:
                if not self.daemon.holds(name) or not await self.store.has_subscriptions(name):
                    continue
                graph = await self.daemon.graph(name)
                if graph is None:  # not authorized: they expire by themselves
                    continue
                token = await graph.token_provider()
            except Exception as err:  # they expire by themselves
                log.warning("could not delete a removed tenant's subscriptions", tenant=name, **log_fields(err))
                continue
            graph.token_provider = _fixed_token(token)  # the settings that could refresh it are going
            task = asyncio.ensure_future(self._delete_all(name, graph))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _delete_all(self, tenant: str, graph: GraphClient) -> None:
        try:
            subscriptions = await self.store.subscriptions(tenant)
            for subscription in subscriptions:
                await delete_subscription(graph, self.store, tenant, subscription.id)
            log.info("a removed tenant's subscriptions deleted", tenant=tenant, deleted=len(subscriptions))
        except Exception as err:  # what is left expires by itself
            log.warning("could not delete a removed tenant's subscriptions", tenant=tenant, **log_fields(err))

    # --- the owner's side ---

    async def drain(self, tenant: str) -> None:
        """Read what was marked due, once: a run (users and groups, and/or the notified mailboxes'
        contacts) and/or the notified mailboxes' calendars."""
        if not self.daemon.holds(tenant):
            return  # the marks stay for the owner
        reads = reads_of(await self.store.take_due(tenant))
        if reads.keep:
            await self.keep(tenant)
        for kinds, mailboxes in ((reads.directory, reads.contacts),
                                 (frozenset({BUSY}) & reads.since.keys(), reads.calendars)):
            if not kinds:
                continue
            result = await self.daemon.read(tenant, kinds, "notification", mailboxes)
            now = self.clock.time()
            for kind in kinds & reads.since.keys():
                self.metrics.freshness.labels(tenant, kind, "notification").observe(max(0.0, now - reads.since[kind]))
            log.info("notified read done", tenant=tenant, kinds=sorted(kinds & reads.since.keys()),
                     mailboxes=None if mailboxes is None else len(mailboxes), result=result)

    def _round_lock(self, tenant: str) -> asyncio.Lock:
        """One keeper round of a tenant at a time: two would both create what neither found stored."""
        return self._rounds.setdefault(tenant, asyncio.Lock())

    async def keep(self, tenant: str) -> None:
        """One keeper round for an owned tenant (subscriptions to match its settings)."""
        async with self._round_lock(tenant):
            await self._keep(tenant)

    async def _keep(self, tenant: str) -> None:
        config = self.daemon.config()
        configured = config.find_tenant(tenant)
        graph = await self.daemon.graph(tenant)
        if configured is None or graph is None:
            return
        keeper = SubscriptionKeeper(configured, config.server.public_url or "", graph, self.store, self.sync_store,
                                    self.sealer, self.clock.time, self.clock.sleep,
                                    handshake_failures=self._handshake_failures.get(tenant, 0))
        row = await self.tenants.tenant(tenant)
        connected = row is None or row.auth_state != DISCONNECTED  # disconnected: its subscriptions go
        settings = self._settings(tenant)
        try:
            round_ = await keeper.keep(enabled=connected and notifications_wanted(config, configured))
        except M365SyncError as err:
            log.warning("could not keep the change-notification subscriptions", tenant=tenant, **log_fields(err))
            return
        finally:
            self._handshake_failures[tenant] = keeper.handshake_failures
        self._kept[tenant] = Kept(settings, round_.next_at, round_.covered)
        self.publish(tenant, round_)
        if round_.created or round_.renewed or round_.deleted or round_.reauthorized:
            log.info("subscriptions kept", tenant=tenant, created=round_.created, renewed=round_.renewed,
                     deleted=round_.deleted, reauthorized=round_.reauthorized)

    def publish(self, tenant: str, round_: KeeperRound) -> None:
        """The subscription and reachability gauges of a tenant, as its keeper round left them."""
        for state, count in ({"active": 0, "reauthorize": 0, "removed": 0} | round_.states).items():
            self.metrics.subscriptions.labels(tenant, state).set(count)
        if round_.reachable is not None:
            self.metrics.notifications_reachable.labels(tenant).set(1 if round_.reachable else 0)

    async def round(self) -> None:
        """Every owned tenant: sweep marks left by lost forwards, then keep its subscriptions when
        a round is due (a renewal, creates left, a retry): a quiet tenant costs one query."""
        for tenant in self.daemon.config().tenants:
            if not self.daemon.holds(tenant.name):
                continue
            try:
                await self.drain(tenant.name)
                if self._keep_due(tenant.name):
                    await self.keep(tenant.name)
            except M365SyncError as err:
                log.warning("notifications round failed", tenant=tenant.name, **log_fields(err))

    # --- start and stop ---

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="notifications")

    async def forget_unconfigured(self) -> None:
        """Tenants removed from the configuration while no daemon ran keep their stored subscriptions
        (a reload deletes them at Graph, :meth:`tenants_removed`): their credentials went with their
        settings, so they cannot be deleted at Graph now. They are forgotten here (their notifications
        are answered 404, as for any unknown tenant, and their reads never come) and Graph drops them
        when they expire, which the warning says. Not on a shared state: another daemon's configuration
        may name a tenant this one's does not (hosts updated one at a time), and forgetting its
        subscriptions there would silence its notifications; a reload there deletes them at Graph."""
        if self.daemon.shared:
            return
        config = self.daemon.config()
        for name in await self.store.subscribed_tenants():
            if config.find_tenant(name) is not None:
                continue
            forgotten = await self.store.forget_notifications(name)
            until = max((s.expires_at for s in forgotten), default=0.0)
            log.warning("a tenant no longer configured had change-notification subscriptions; forgotten here, "
                        "Graph keeps them until they expire (to delete them now, configure the tenant again and "
                        "remove it with a reload)", tenant=name, subscriptions=len(forgotten),
                        expire_by=datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"))

    async def _loop(self) -> None:
        try:
            await self.forget_unconfigured()
        except Exception as err:  # the next start tries again
            log.warning("could not forget the subscriptions of tenants no longer configured", **log_fields(err))
        while True:
            await self.clock.sleep(KEEP_SECONDS)
            try:
                await self.round()
            except Exception as err:  # one failed round must not end them
                log.warning("notifications round failed", **log_fields(err))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.debouncer.stop()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)


def _fixed_token(token: str) -> TokenProvider:
    async def provide(*, force_refresh: bool = False) -> str:
        return token

    return provide
