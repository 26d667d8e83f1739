"""The daemon's side of tenant leases (``daemon.leases``): what it runs, what
it forwards, and what it shows.

Every daemon of a shared state schedules every configured tenant, but a run
or a calendar poll goes ahead only where the tenant's lease is held; a
request that lands elsewhere (Sync now, an OAuth callback) is forwarded to
the owner with its run id, so the caller can follow that run from any daemon
(its record is in the shared state); while no daemon holds the tenant (one
stands back after its lease session was cut), the request is refused with
when to try again, never answered with a run id that would not run. A
daemon that takes a tenant over runs it at once ("takeover"), so work that
a dead daemon left half done is finished without waiting for the next
scheduled time.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from daemon.config import Config
from daemon.errors import NoLeaseHolder
from daemon.leases import LeaseEvents, Leases, LocalLeases, SharedLeases, default_instance_name
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.scheduler import SchedulerClock, TenantSchedule, new_run_id

log = get_logger(__name__)

FORWARDED_KEPT = 200  # run ids handed out for another daemon, kept for their status until recorded


def leases_for(config: Config, clock: SchedulerClock) -> Callable[[LeaseEvents], Leases]:
    """How this configuration's leases are made, given whom their session tells what happens."""
    state = config.state
    url = state.url
    if url is None:
        return lambda events: LocalLeases()
    instance = state.instance_name or default_instance_name(config.server.port)

    def shared(events: LeaseEvents) -> Leases:
        return SharedLeases(url, instance, float(state.lease_seconds), clock, state.password_file,
                            config.server.public_url, on_acquired=events.lease_acquired,
                            on_released=events.lease_released, on_lost=events.leases_lost,
                            on_message=events.message, busy=events.busy)

    return shared


class Ownership:
    """This daemon's answers to its lease session (a :class:`~daemon.leases.LeaseEvents`)."""

    def __init__(self, metrics: Metrics, schedules: dict[str, TenantSchedule],
                 forget_tokens: Callable[[str], None],
                 leases: Callable[[LeaseEvents], Leases] = lambda events: LocalLeases()) -> None:
        self.metrics = metrics
        self.schedules = schedules
        self.forget_tokens = forget_tokens  # the owner reloads a token cache another daemon wrote
        self.forwarded: dict[str, str] = {}  # run id -> tenant, asked here, run by the owner
        self.on_notified: Callable[[str], None] = lambda tenant: None  # another daemon persisted notifications
        self.leases = leases(self)
        self.metrics.owns = self.holds

    @property
    def shared(self) -> bool:
        return self.leases.shared

    def holds(self, tenant: str) -> bool:
        return self.leases.holds(tenant)

    def write_guard(self, tenant: str) -> Callable[[], Awaitable[None]] | None:
        """What a run asks before each PBX write request (None: one daemon, nothing to ask)."""
        return functools.partial(self.leases.check, tenant) if self.shared else None

    async def request(self, tenant: str, trigger: str) -> str | None:
        """A run of ``tenant`` as soon as possible, here or at its owner; returns its run id
        (None: the tenant is not scheduled). Raises :class:`NoLeaseHolder` when no daemon
        holds the tenant, rather than hand out a run id that would never run."""
        schedule = self.schedules.get(tenant)
        if schedule is None:
            return None
        if not self.shared or self.holds(tenant):
            return schedule.request(trigger)
        run_id = new_run_id()
        try:
            sent = await self.leases.forward(tenant, {"kind": "sync", "trigger": trigger, "run_id": run_id})
        except Exception as err:  # e.g. the lease session was cut meanwhile
            log.error("could not forward a sync request to the tenant's owner", tenant=tenant, error=str(err))
            sent = False
        if not sent:
            raise NoLeaseHolder(tenant, self.leases.retry_after())
        self.forwarded[run_id] = tenant
        while len(self.forwarded) > FORWARDED_KEPT:
            self.forwarded.pop(next(iter(self.forwarded)))
        return run_id

    async def forward_notified(self, tenant: str) -> bool:
        """Tell the tenant's owner that notifications of it wait in the shared state."""
        return self.shared and await self.leases.forward(tenant, {"kind": "notified"})

    def forwarded_status(self, tenant: str, run_id: str) -> dict[str, Any] | None:
        if self.forwarded.get(run_id) != tenant:
            return None
        return {"run_id": run_id, "state": "queued", "phase": "forwarded to the daemon that owns the tenant"}

    async def owners(self) -> dict[str, str]:
        """tenant -> owning daemon, for the status (a shared state only: on SQLite it is always this one)."""
        return await self.leases.owners() if self.shared else {}

    # --- from the lease session ---

    def lease_acquired(self, tenant: str) -> None:
        self.metrics.tenant_owner.labels(tenant, self.leases.instance).set(1)
        self.forget_tokens(tenant)  # another daemon may have refreshed (rotated) them meanwhile
        schedule = self.schedules.get(tenant)
        if schedule is not None:  # at start-up there is none yet: the start-up run covers it
            schedule.request("takeover")

    def lease_released(self, tenant: str) -> None:
        try:
            self.metrics.tenant_owner.remove(tenant, self.leases.instance)
        except KeyError:
            pass

    def leases_lost(self, count: int) -> None:
        self.metrics.leases_lost.inc(count)

    def busy(self, tenant: str) -> bool:
        schedule = self.schedules.get(tenant)
        return schedule is not None and schedule.current is not None

    def message(self, message: Mapping[str, Any]) -> None:
        tenant, trigger, run_id = message.get("tenant"), message.get("trigger"), message.get("run_id")
        if message.get("kind") == "notified" and isinstance(tenant, str):
            self.on_notified(tenant)  # the marks are in the shared state; the owner drains them
            return
        if message.get("kind") != "sync" or not isinstance(tenant, str) or not isinstance(trigger, str):
            return
        schedule = self.schedules.get(tenant)
        if schedule is None or not self.holds(tenant):
            log.warning("a forwarded sync request reached a daemon that does not own the tenant", tenant=tenant)
            return
        if trigger == "authorized":
            self.forget_tokens(tenant)  # the callback landed on another daemon, which stored the new tokens
        log.info("sync requested by another daemon", tenant=tenant, trigger=trigger, by=message.get("from"))
        schedule.request(trigger, run_id if isinstance(run_id, str) else None)
