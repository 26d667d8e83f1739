"""The daemon's tenants: their schedules and calendar polls, the one gate a
sync passes (this daemon holds the tenant's lease, and a delegated tenant is
authorized), their metrics, readiness and status, and a new configuration
taken with one :meth:`Supervisor.apply`.

The process around it (database, stores, auth, HTTP, systemd) is wired by
``daemon.service``; the supervisor gets what it needs at construction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from daemon import status
from daemon.auth.manager import AuthManager
from daemon.auth.states import AUTHORIZED
from daemon.config import Config, TenantConfig
from daemon.errors import M365SyncError, NoLeaseHolder
from daemon.graph.client import GraphClient
from daemon.health import TenantStatus, tenant_status
from daemon.history_view import ObjectHistory, object_history
from daemon.leases import LeaseEvents, Leases, LocalLeases
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.ownership import Ownership
from daemon.polls import poll_settings, tenant_polls
from daemon.progress import ProgressLog
from daemon.retry import GraphBudget
from daemon.scheduler import PollLoop, RunProgress, SchedulerClock, TenantSchedule, schedule_interval
from daemon.status import NEXT_RUN_KEY, TenantReport
from daemon.sync.kinds import PRESENCE, SyncRequest, backstop_members
from daemon.sync.run_backlog import RunBacklog
from daemon.sync.runner import RunResult, TenantRunner
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

SKIPPED = {"not_owner": "another daemon of the shared state owns the tenant",
           "not_authorized": "the tenant is not authorized",
           "not_configured": "the tenant is not in the configuration"}


class Supervisor:
    """Every configured tenant of one daemon: when it syncs, whether it may, and what it did."""

    def __init__(self, config: Config, store: Store, sync_store: SyncStore, auth: AuthManager,
                 session: aiohttp.ClientSession, metrics: Metrics, clock: SchedulerClock, *, run_timeout: float,
                 schedule: bool = True, leases: Callable[[LeaseEvents], Leases] = lambda events: LocalLeases()
                 ) -> None:
        self.config = config
        self.store = store
        self.sync_store = sync_store
        self.auth = auth
        self.session = session
        self.metrics = metrics
        self.clock = clock
        self.run_timeout = run_timeout
        self.schedule = schedule  # False: nothing runs by itself (tests, and runs driven by the caller)
        self.run_slots = asyncio.Semaphore(config.runs.max_concurrent)  # [runs] max_concurrent, across tenants
        self.schedules: dict[str, TenantSchedule] = {}
        self.polls: dict[str, list[PollLoop]] = {}  # per tenant: calendar, presence, users, mailboxes
        self.budgets: dict[str, GraphBudget] = {}  # one Graph budget per tenant, shared by runs and polls
        self.backlogs: dict[str, RunBacklog] = {}  # per tenant: run results and locks a store outage left unwritten
        self.pending_syncs: set[str] = set()
        self.ownership = Ownership(metrics, self.schedules, auth.forget_tokens, leases)
        self._requests: set[asyncio.Task[str | None]] = set()
        # Change notifications delete the subscriptions of tenants a reload removes.
        self.on_tenants_removed: Callable[[list[str]], Awaitable[None]] | None = None
        # change notifications keep subscriptions: (tenant, the run changed users, so maybe the mailbox set)
        self.on_run_finished: Callable[[str, bool], None] = lambda tenant, changed: None
        self.pushed: Callable[[str, str], bool] = lambda tenant, kind: False  # (tenant, kind) notified: polls slow down

    # --- start and stop ---

    async def register_tenants(self) -> None:
        """Every configured tenant in the state (a changed application or directory drops its tokens)."""
        for tenant in self.config.tenants:
            if await self.store.register_tenant(tenant.name, tenant.directory_id, tenant.application_id):
                log.warning("application or directory ID changed; stored tokens dropped, "
                            "extension numbers and mappings kept", tenant=tenant.name)

    async def take_leases(self) -> None:
        """The tenants this daemon owns, before any start-up run (which so knows them)."""
        self.ownership.leases.set_tenants(t.name for t in self.config.tenants if t.enabled)
        await self.ownership.leases.start()

    def start_tenants(self) -> None:
        if self.schedule:
            for tenant in self.config.tenants:
                if tenant.enabled:
                    self.start_tenant(tenant)

    def start_tenant(self, tenant: TenantConfig) -> None:
        """Schedule a tenant's runs (a start-up run first) and its calendar polls."""
        schedule = TenantSchedule(tenant, self._run_of(tenant.name), self.clock, self.run_timeout, self._next_run,
                                  self.run_slots, self._started)
        self.schedules[tenant.name] = schedule
        schedule.start()
        self._start_polls(tenant)

    async def stop(self) -> None:
        await self.ownership.leases.stop()
        for name in list(self.polls):
            await self._stop_polls(name)
        for schedule in self.schedules.values():
            await schedule.stop()
        self.schedules.clear()

    # --- a new configuration ---

    async def apply(self, config: Config) -> None:
        """Take ``config``'s tenants: added (or enabled) ones get their schedule, with a start-up
        run; removed (or disabled) ones stop being scheduled once a run in progress has finished
        (it is never dropped; their state stays until ``m365sync disconnect``); changed ones keep
        their schedule, whose next due time is computed again, and their next run uses the new
        settings."""
        before = {t.name: t for t in self.config.tenants if t.enabled}
        after = {t.name: t for t in config.tenants if t.enabled}
        if self.on_tenants_removed is not None and before.keys() - after.keys():
            await self.on_tenants_removed(sorted(before.keys() - after.keys()))  # their settings still apply here
        self.config = self.auth.config = config
        self.ownership.leases.set_tenants(after)  # a shared state: leases of removed tenants go at the next round
        await self.register_tenants()
        for name in sorted(before.keys() - after.keys()):
            await self._stop_polls(name)
            schedule = self.schedules.pop(name, None)
            if schedule is not None:
                await schedule.retire()  # a run in progress finishes first
            log.info("tenant no longer scheduled (removed or disabled in the configuration)", tenant=name)
        for name in sorted(after.keys() - before.keys()):
            if self.schedule:
                self.start_tenant(after[name])
            log.info("tenant added by a reload", tenant=name)
        for name in sorted(before.keys() & after.keys()):
            if before[name] == after[name]:
                continue
            self.auth.forget_app(name)  # msal's app was built from the old settings
            schedule = self.schedules.get(name)
            if schedule is not None:
                schedule.reschedule(after[name])
            if poll_settings(before[name]) != poll_settings(after[name]):
                await self._stop_polls(name)
                if self.schedule:
                    self._start_polls(after[name])
            log.info("tenant settings changed by a reload", tenant=name)
        await self.tenant_statuses()

    # --- asking for a sync ---

    async def request(self, tenant: str, trigger: str = "sync-now") -> str | None:
        """A run of ``tenant`` as soon as possible (Sync now, an authorization): queued on its
        schedule here, or forwarded to the daemon that holds it; returns the run id (None: the
        tenant is not scheduled). Raises :class:`NoLeaseHolder` when no daemon holds it."""
        self.pending_syncs.add(tenant)
        run_id = await self.ownership.request(tenant, trigger)
        log.info("sync requested", tenant=tenant, trigger=trigger, run_id=run_id)
        return run_id

    def authorized(self, tenant: str) -> None:
        """An authorization completed (the OAuth callback): its tenant syncs as soon as possible."""
        self.pending_syncs.add(tenant)
        task = asyncio.ensure_future(self._request_quietly(tenant, "authorized"))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _request_quietly(self, tenant: str, trigger: str) -> str | None:
        try:
            return await self.request(tenant, trigger)
        except NoLeaseHolder as err:
            log.warning("no daemon owns the tenant right now; the request waits for its next scheduled run",
                        tenant=tenant, error=str(err))
            return None

    async def sync_now(self, request: SyncRequest, run_id: str | None = None,
                       progress: RunProgress | None = None) -> str:
        """Sync ``request.kinds`` of ``request.tenant`` here and now: the one way every sync starts.

        Called by the tenant's schedule for a run of every run kind (its crontab, the start-up
        run, and the runs :meth:`request` queued: Sync now, an authorization, a takeover), by the
        calendar poll for ``busy``, the presence poll for ``presence``, the users poll and the
        mailbox backstop (queued on the schedule), and by whatever comes next (change notifications) with the
        kinds it names. It passes the one gate first (:meth:`_skip_reason`); a skipped sync
        returns why ("not_owner", "not_authorized"), anything else the run's or poll's result."""
        tenant = self._tenant(request.tenant)
        skipped = await self._skip_reason(tenant)
        if tenant is None or skipped is not None:
            reason = skipped or "not_configured"
            if progress is not None:
                progress.details["skipped"] = SKIPPED[reason]
            return reason
        runner = self._tenant_runner(tenant)
        if not request.is_run:
            return await self._poll(runner, request)
        started = time.monotonic()
        try:
            result = await runner.sync(request, ProgressLog(progress, self.clock) if progress else None,
                                       run_id=run_id)
        except asyncio.CancelledError:  # the runner recorded it "interrupted", with the counts it reached
            self.metrics.sync_runs.labels(tenant.name, "interrupted").inc()
            raise
        await self._record_run(result, time.monotonic() - started, progress)
        return result.result

    async def read_now(self, tenant: str, kinds: frozenset[str], trigger: str,
                       mailboxes: frozenset[str] | None = None) -> str:
        """Sync ``kinds`` (of ``mailboxes`` only, when named) now and wait for the result (a change
        notification): a run is queued on the tenant's schedule, which coalesces it with one already
        queued; a calendar read is a poll."""
        schedule = self.schedules.get(tenant)
        request = SyncRequest(tenant, kinds, trigger, mailboxes)
        if schedule is None or not request.is_run:
            return await self.sync_now(request)
        progress = await schedule.wait(schedule.request(trigger, kinds=kinds, mailboxes=mailboxes))
        return progress.result or "finished"

    async def graph_for(self, tenant: str) -> GraphClient | None:
        """The tenant's Graph client while this daemon may sync it, else None."""
        config = self._tenant(tenant)
        if config is None or await self._skip_reason(config) is not None:
            return None
        return self._tenant_runner(config).graph_client()

    async def _skip_reason(self, tenant: TenantConfig | None) -> str | None:
        """The one gate of runs and polls: None when this daemon may sync the tenant now."""
        if tenant is None:
            return "not_configured"
        if not self.ownership.holds(tenant.name):
            return "not_owner"  # another daemon syncs it
        row = await self.store.tenant(tenant.name)
        if tenant.auth_mode == "delegated" and (row is None or row.auth_state != AUTHORIZED):
            return "not_authorized"
        return None

    def _tenant(self, name: str) -> TenantConfig | None:
        """The tenant's settings as configured now (a reload may have changed them); a tenant a
        reload removed keeps its last ones for the run it finishes."""
        configured = self.config.find_tenant(name)
        schedule = self.schedules.get(name)
        return configured or (schedule.tenant if schedule is not None else None)

    def _tenant_runner(self, tenant: TenantConfig) -> TenantRunner:
        guard = self.ownership.write_guard(tenant.name)
        return TenantRunner(tenant, self.store, self.sync_store, self.auth.tokens, self.session, self.metrics,
                            budget=self.budgets.setdefault(tenant.name, GraphBudget()), write_guard=guard,
                            run_lock_alive=_lease_decides if guard is not None else None,
                            backlog=self.backlogs.setdefault(tenant.name, RunBacklog()))

    # --- the schedule's and the poll's side ---

    def _run_of(self, tenant: str) -> Callable[[str, str, RunProgress], Awaitable[str]]:
        async def run(trigger: str, run_id: str, progress: RunProgress) -> str:
            return await self.sync_now(SyncRequest(tenant, progress.kinds, trigger, progress.mailboxes), run_id,
                                       progress)

        return run

    def _start_polls(self, tenant: TenantConfig) -> None:
        """The tenant's polls (``daemon.polls``): calendar, presence, users, and the mailbox backstop."""
        async def members(kind: str) -> list[str]:  # by the settings of now: a reload may change who is synced
            # another daemon reads them: no state query here each tick (taking over mid-round, this
            # daemon reads all of them in the rest of the round: its cursor never moved)
            if not self.ownership.holds(tenant.name):
                return []
            return await backstop_members(self._tenant(tenant.name) or tenant, self.sync_store, kind)

        loops = tenant_polls(tenant, self.schedules.get(tenant.name), self.sync_now, self.clock, self.metrics,
                             members, lambda kind: self.pushed(tenant.name, kind))
        self.polls[tenant.name] = loops
        for loop in loops:
            loop.start()

    async def _stop_polls(self, name: str) -> None:
        for poll in self.polls.pop(name, []):
            await poll.stop()

    async def _next_run(self, tenant: str, when: float) -> None:
        self.metrics.next_run.labels(tenant).set(when)
        config = self._tenant(tenant)
        if config is not None:
            self.metrics.schedule_interval.labels(tenant).set(schedule_interval(config, when))
        await self.sync_store.set_timestamp(tenant, NEXT_RUN_KEY, when)

    def _started(self, run: RunProgress) -> None:
        if run.lateness is not None:
            self.metrics.run_lateness.observe(run.lateness)

    # --- what they did ---

    async def _poll(self, runner: TenantRunner, request: SyncRequest) -> str:
        name = request.tenant
        presence = PRESENCE in request.kinds
        polls = self.metrics.presence_polls if presence else self.metrics.calendar_polls
        started = self.clock.monotonic()
        try:
            result = await runner.sync(request)
        except M365SyncError as err:
            polls.labels(name, "failed").inc()
            log.warning(f"{'presence' if presence else 'calendar'} poll failed", tenant=name, error=str(err))
            return "failed"
        polls.labels(name, result.result).inc()
        if presence:
            self.metrics.presence_poll_duration.labels(name).observe(self.clock.monotonic() - started)
            for action, amount in result.report.presence.counts.items():
                self.metrics.presence_writes.labels(name, action).inc(amount)
        if result.report.busy.unreadable:
            self.metrics.calendar_unreadable.labels(name).inc(len(result.report.busy.unreadable))
        return result.result

    async def _record_run(self, result: RunResult, seconds: float, progress: RunProgress | None) -> None:
        report, tenant, metrics = result.report, result.tenant, self.metrics
        if progress is not None:
            progress.details.update(counts=report.counts_by_kind(), writes=report.plan[:100], failures=report.failures[:20],
                                    held=len(report.held), error=report.error)
        metrics.sync_runs.labels(tenant, result.result).inc()
        metrics.sync_duration.labels(tenant).observe(seconds)
        if result.result == "success":
            metrics.last_success.labels(tenant).set(time.time())
        counts = {"user": report.counts, "group": report.groups.counts, "contact": report.contacts.counts}
        for kind, kind_counts in counts.items():
            for action, amount in kind_counts.items():
                if action == "failed":
                    metrics.objects_failed.labels(tenant, kind).inc(amount)
                elif action != "quarantined":
                    metrics.objects_changed.labels(tenant, kind, action).inc(amount)
        metrics.deprovisions_held.labels(tenant).set(len(report.held))
        self.on_run_finished(tenant, bool(report.counts) or report.full_round)  # users changed: maybe the mailboxes
        try:
            for kind in ("user", "group", "contact"):
                metrics.synced_objects.labels(tenant, kind).set(await self.sync_store.count_synced(tenant, kind))
        except M365SyncError as err:  # the store is down: the gauge waits for the next run, the result stands
            log.warning("could not count the synced objects", tenant=tenant, error=str(err))

    async def run_status(self, tenant: str, run_id: str) -> dict[str, Any] | None:
        """A run's progress while it is queued or running, else its record."""
        schedule = self.schedules.get(tenant)
        progress = schedule.progress(run_id) if schedule is not None else None
        if progress is not None:
            return progress.as_json()
        row = await self.store.run(run_id)
        if row is None or row.tenant != tenant:
            return self.ownership.forwarded_status(tenant, run_id)
        return {"run_id": row.id, "trigger": row.trigger, "state": "finished" if row.finished_at else "running",
                "result": row.result, "started_at": row.started_at, "finished_at": row.finished_at,
                "error": row.error, **row.summary}

    async def status_reports(self) -> list[TenantReport]:
        next_runs = {name: s.next_run for name, s in self.schedules.items() if s.next_run is not None}
        return await status.collect(self.config, self.store, self.sync_store, next_runs,
                                    await self.ownership.owners())

    async def object_history(self, tenant: str, reference: str) -> ObjectHistory | None:
        return await object_history(self.sync_store, tenant, reference)

    async def tenant_statuses(self) -> list[TenantStatus]:
        """Readiness of every configured tenant; also refreshes the ready gauge."""
        rows = {row.name: row for row in await self.store.tenants()}
        statuses = [tenant_status(t, rows.get(t.name), str(self.config.source)) for t in self.config.tenants]
        for tenant_state in statuses:
            self.metrics.tenant_ready.labels(tenant=tenant_state.tenant).set(1 if tenant_state.ready else 0)
        configured = {t.name for t in self.config.tenants}
        statuses += [TenantStatus(name, False, False, "not_in_config",
                                  f"no longer in the configuration; its state stays until: m365sync disconnect --tenant {name}")
                     for name in sorted(rows) if name not in configured]
        return statuses


def _lease_decides(holder: str) -> bool:
    """A shared state: holding the tenant's lease means no other daemon runs it; a
    run lock left by a daemon that died is so never waited for."""
    return False
