"""The daemon process: state database, HTTP server, systemd notifications,
and a clean shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from daemon import status
from daemon.auth.manager import AUTHORIZED, AuthManager
from daemon.clock import SystemClock
from daemon.commands import sealer_for
from daemon.config import Config, TenantConfig, read_secret
from daemon.config_checks import log_findings
from daemon.errors import ConfigError, M365SyncError
from daemon.health import TenantStatus, tenant_status
from daemon.leases import LocalLeases
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.ownership import Ownership, leases_for
from daemon.progress import ProgressLog
from daemon.reload import reload_config
from daemon.retry import GraphBudget
from daemon.scheduler import (
    PollLoop,
    RunFunction,
    RunProgress,
    SchedulerClock,
    TenantSchedule,
    schedule_interval,
)
from daemon.sdnotify import Notifier
from daemon.server import build_app
from daemon.status import NEXT_RUN_KEY, TenantReport
from daemon.sync.runner import TenantRunner
from state.db import Database, open_database
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 10.0


class Service:
    """One running m365sync: start, serve, stop."""

    def __init__(
        self,
        config: Config,
        environ: Mapping[str, str] | None = None,
        *,
        schedule: bool = True,
        clock: SchedulerClock | None = None,
        run_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.notifier = Notifier(environ)
        self.schedule = schedule
        self.clock: SchedulerClock = clock or SystemClock()
        self.run_timeout = float(config.runs.timeout_minutes * 60) if run_timeout is None else run_timeout
        self.run_slots = asyncio.Semaphore(config.runs.max_concurrent)  # [runs] max_concurrent, across tenants
        self.schedules: dict[str, TenantSchedule] = {}
        self.polls: dict[str, PollLoop] = {}
        self.budgets: dict[str, GraphBudget] = {}  # one Graph budget per tenant, shared by runs and polls
        self._session: aiohttp.ClientSession | None = None
        self._sync_store: SyncStore | None = None
        self._db: Database | None = None
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.bound_port: int | None = None
        self.auth: AuthManager | None = None
        self.pending_syncs: set[str] = set()
        self.ownership = Ownership(LocalLeases(), self.metrics, self.schedules, lambda tenant: None)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise M365SyncError("the service is not started")
        return self._store

    @property
    def sync_store(self) -> SyncStore:
        if self._sync_store is None:
            raise M365SyncError("the service is not started")
        return self._sync_store

    async def start(self) -> None:
        """Open the state, register tenants, listen, then tell systemd READY=1."""
        log_findings(self.config)  # what check-config would report: logged, never a refusal
        self._db = await open_database(self.config.state.target, password_file=self.config.state.password_file)
        self._store = Store(self._db)
        self._sync_store = SyncStore(self._db)
        self.auth = AuthManager(
            self.config, self._store, self.metrics, sealer_for(self.config, self.environ), on_authorized=self.request_sync
        )
        for tenant in self.config.tenants:
            changed = await self._store.register_tenant(
                tenant.name, tenant.directory_id, tenant.application_id
            )
            if changed:
                log.warning(
                    "application or directory ID changed; stored tokens dropped, "
                    "extension numbers and mappings kept",
                    tenant=tenant.name,
                )
        for row in await self._store.tenants():
            self.auth.publish_state(row.name, row.auth_state)
        leases = leases_for(self.config, self.clock)
        self.ownership = Ownership(leases, self.metrics, self.schedules, self.auth.forget_tokens)
        leases.set_tenants(t.name for t in self.config.tenants if t.enabled)
        try:
            await leases.start()  # before the start-up runs, so they know which tenants are this daemon's
        except BaseException:
            await self.stop()
            raise
        self._runner = web.AppRunner(
            build_app(self, self.metrics, self.auth, _admin_token(self.config), self),
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await self._runner.setup()
        server = self.config.server
        site = web.TCPSite(self._runner, server.host, server.port)
        try:
            await site.start()
        except OSError as err:
            await self.stop()
            reason = "address already in use" if err.errno == errno.EADDRINUSE else err.strerror
            raise M365SyncError(
                f"cannot listen on {server.listen}: {reason}",
                hint="change [server] listen, or stop the process using that port",
            ) from err
        self.bound_port = _bound_port(self._runner)
        self._session = aiohttp.ClientSession()
        if self.schedule:
            for tenant in self.config.tenants:
                if tenant.enabled:
                    self.start_tenant(tenant)
        self.notifier.notify("READY=1\nSTATUS=serving")
        self._watchdog = asyncio.create_task(self.notifier.watchdog(), name="sd-watchdog")
        statuses = await self.tenant_statuses()
        log.info(
            "m365sync started",
            listen=f"{server.host}:{self.bound_port}",
            state=self._db.location if self._db is not None else "",
            tenants={s.tenant: s.reason for s in statuses},
        )

    async def stop(self) -> None:
        """Close the server and the database; safe to call more than once."""
        self.notifier.notify("STOPPING=1")
        await self.ownership.leases.stop()
        for poll in self.polls.values():
            await poll.stop()
        self.polls.clear()
        for schedule in self.schedules.values():
            await schedule.stop()
        self.schedules.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._db is not None:
            await self._db.close()
            self._db = None
            self._store = None

    def request_sync(self, tenant: str, trigger: str = "authorized") -> str | None:
        """Ask for a sync of ``tenant`` as soon as possible; returns the run id (None: not scheduled)."""
        self.pending_syncs.add(tenant)
        run_id = self.ownership.request(tenant, trigger)  # here, or forwarded to the daemon that owns it
        log.info("sync requested", tenant=tenant, trigger=trigger, run_id=run_id)
        return run_id

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

    async def _next_run(self, tenant: str, when: float) -> None:
        self.metrics.next_run.labels(tenant).set(when)
        config = next((t for t in self.config.tenants if t.name == tenant), None)
        if config is not None:
            self.metrics.schedule_interval.labels(tenant).set(schedule_interval(config, when))
        await self.sync_store.set_timestamp(tenant, NEXT_RUN_KEY, when)

    def start_tenant(self, tenant: TenantConfig) -> None:
        """Schedule a tenant's runs (a start-up run first) and its calendar polls."""
        schedule = TenantSchedule(tenant, self._runner_for(tenant), self.clock, self.run_timeout, self._next_run,
                                  self.run_slots, self._started)
        self.schedules[tenant.name] = schedule
        schedule.start()
        self.start_polls(tenant)

    def _started(self, run: RunProgress) -> None:
        if run.lateness is not None:
            self.metrics.run_lateness.observe(run.lateness)

    def start_polls(self, tenant: TenantConfig) -> None:
        if tenant.events.enabled:
            loop = PollLoop(f"calendar-{tenant.name}", tenant.events.poll_seconds, self._poller_for(tenant),
                            self.clock, self.metrics.calendar_polls_skipped.labels(tenant.name).inc)
            self.polls[tenant.name] = loop
            loop.start()

    async def stop_polls(self, name: str) -> None:
        poll = self.polls.pop(name, None)
        if poll is not None:
            await poll.stop()

    def current(self, tenant: TenantConfig) -> TenantConfig:
        """The tenant's settings as configured now (a reload may have changed them)."""
        return next((t for t in self.config.tenants if t.name == tenant.name), tenant)

    def _poller_for(self, tenant: TenantConfig) -> Callable[[], Awaitable[None]]:
        async def poll() -> None:
            if not self.ownership.holds(tenant.name):
                return  # another daemon polls it
            tenant_now = self.current(tenant)
            row = await self.store.tenant(tenant.name)
            if tenant_now.auth_mode == "delegated" and (row is None or row.auth_state != AUTHORIZED):
                return
            assert self.auth is not None and self._session is not None
            runner = self._tenant_runner(tenant_now)
            try:
                report = await runner.poll_calendar()
            except M365SyncError as err:
                self.metrics.calendar_polls.labels(tenant.name, "failed").inc()
                log.warning("calendar poll failed", tenant=tenant.name, error=str(err))
                return
            self.metrics.calendar_polls.labels(tenant.name, "partial" if report.failures else "success").inc()
            if report.unreadable:
                self.metrics.calendar_unreadable.labels(tenant.name).inc(len(report.unreadable))

        return poll

    def _runner_for(self, tenant: TenantConfig) -> RunFunction:
        async def run(trigger: str, run_id: str, progress: RunProgress) -> str:
            return await self.run_tenant(self.current(tenant), trigger, run_id, progress)

        return run

    async def run_tenant(self, tenant: TenantConfig, trigger: str, run_id: str, progress: RunProgress) -> str:
        """One scheduled run: skipped while a delegated tenant is not authorized, or another daemon owns it."""
        if not self.ownership.holds(tenant.name):
            progress.details["skipped"] = "another daemon of the shared state owns the tenant"
            return "not_owner"
        row = await self.store.tenant(tenant.name)
        if tenant.auth_mode == "delegated" and (row is None or row.auth_state != AUTHORIZED):
            progress.details["skipped"] = "the tenant is not authorized"
            return "not_authorized"
        runner = self._tenant_runner(tenant)
        started = time.monotonic()
        try:
            result = await runner.run(trigger, progress=ProgressLog(progress, self.clock), run_id=run_id)
        except asyncio.CancelledError:
            await self.store.finish_run(run_id, "interrupted", {}, "stopped by the run time limit or a shutdown")
            self.metrics.sync_runs.labels(tenant.name, "interrupted").inc()
            raise
        report = result.report
        progress.details.update(counts=report.counts, writes=report.plan[:100], failures=report.failures[:20],
                                held=len(report.held), error=report.error)
        self._record_metrics(tenant.name, result.result, time.monotonic() - started, len(report.held),
                             {"user": report.counts, "group": report.groups.counts, "contact": report.contacts.counts})
        for kind in ("user", "group", "contact"):
            self.metrics.synced_objects.labels(tenant.name, kind).set(await self.sync_store.count_synced(tenant.name, kind))
        return result.result

    def _tenant_runner(self, tenant: TenantConfig) -> TenantRunner:
        assert self.auth is not None and self._session is not None
        guard = self.ownership.write_guard(tenant.name)
        return TenantRunner(tenant, self.store, self.sync_store, self.auth, self._session, self.metrics,
                            budget=self.budgets.setdefault(tenant.name, GraphBudget()), write_guard=guard,
                            run_lock_alive=_lease_decides if guard is not None else None)

    def _record_metrics(
        self, tenant: str, result: str, seconds: float, held: int, counts: dict[str, dict[str, int]]
    ) -> None:
        metrics = self.metrics
        metrics.sync_runs.labels(tenant, result).inc()
        metrics.sync_duration.labels(tenant).observe(seconds)
        if result == "success":
            metrics.last_success.labels(tenant).set(time.time())
        for kind, kind_counts in counts.items():
            for action, amount in kind_counts.items():
                if action == "failed":
                    metrics.objects_failed.labels(tenant, kind).inc(amount)
                elif action != "quarantined":
                    metrics.objects_changed.labels(tenant, kind, action).inc(amount)
        metrics.deprovisions_held.labels(tenant).set(held)

    def request_stop(self) -> None:
        self._stop.set()

    async def serve_until_stopped(self) -> None:
        """Run until SIGTERM or SIGINT (or :meth:`request_stop`), then shut down;
        SIGHUP (``systemctl reload``) re-reads the configuration."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        reloads: set[asyncio.Task[bool]] = set()

        def on_hangup() -> None:
            task = asyncio.ensure_future(reload_config(self))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self.stop()
            log.info("m365sync stopped")

    def _on_signal(self, signum: int) -> None:
        log.info("shutting down", signal=signal.Signals(signum).name)
        self._stop.set()

    async def tenant_statuses(self) -> list[TenantStatus]:
        """Readiness of every configured tenant; also refreshes the ready gauge."""
        rows = {row.name: row for row in await self.store.tenants()}
        statuses = [
            tenant_status(t, rows.get(t.name), str(self.config.source)) for t in self.config.tenants
        ]
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


def _admin_token(config: Config) -> str | None:
    """The admin API token, or None (admin endpoints then refuse everyone)."""
    path = config.server.admin_token_file
    if path is None:
        return None
    try:
        return read_secret(path)
    except ConfigError as err:
        log.warning("admin API disabled: cannot read the admin token", problem=str(err))
        return None


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None

