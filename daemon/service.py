"""The daemon process, wired: the state database and its stores, the auth
manager, the HTTP server, systemd notifications, and a clean shutdown on
SIGTERM/SIGINT; SIGHUP reloads the configuration (``daemon.reload``). The
tenants themselves are the supervisor's (``daemon.supervisor``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from collections.abc import Mapping

import aiohttp

from daemon.auth.manager import AuthManager
from daemon.clock import SystemClock
from daemon.config import Config, read_secret
from daemon.config_checks import log_findings
from daemon.errors import ConfigError, M365SyncError
from daemon.http_guard import ConnectionGuard, GuardedServer
from daemon.leases import default_instance_name
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.notify.service import Daemon as NotifiedDaemon
from daemon.notify.service import Notifications
from daemon.ownership import leases_for
from daemon.reload import reload_config
from daemon.scheduler import SchedulerClock
from daemon.sdnotify import Notifier
from daemon.sealer import sealer_for
from daemon.server import build_app
from daemon.supervisor import Supervisor
from state.db import Database
from state.notify_store import NotifyStore
from state.open import open_database
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
        self._config = config
        self.metrics = Metrics()
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.notifier = Notifier(environ)
        self.schedule = schedule
        self.clock: SchedulerClock = clock or SystemClock()
        self.run_timeout = float(config.runs.timeout_minutes * 60) if run_timeout is None else run_timeout
        self._supervisor: Supervisor | None = None
        self._store: Store | None = None
        self._sync_store: SyncStore | None = None
        self.auth: AuthManager | None = None
        self._session: aiohttp.ClientSession | None = None
        self._db: Database | None = None
        self._http: GuardedServer | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.notifications: Notifications | None = None
        self.bound_port: int | None = None

    @property
    def config(self) -> Config:
        """The running configuration (a reload changes its tenants)."""
        return self._config if self._supervisor is None else self._supervisor.config

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise M365SyncError("the service is not started")
        return self._supervisor

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
        self._db = db = await open_database(self.config.state.target, password_file=self.config.state.password_file)
        self._store, self._sync_store = store, sync_store = Store(db), SyncStore(db, history_days=self.config.state.history_days)
        self.auth = auth = AuthManager(self.config, store, self.metrics, sealer_for(self.config, self.environ),
                                       on_authorized=lambda tenant: self.supervisor.authorized(tenant))
        self._session = aiohttp.ClientSession()
        self._supervisor = supervisor = Supervisor(
            self.config, store, sync_store, auth, self._session, self.metrics, self.clock,
            run_timeout=self.run_timeout, schedule=self.schedule, leases=leases_for(self.config, self.clock))
        self.notifications = notifications = self._notifications(supervisor, auth, db)
        await supervisor.register_tenants()
        for row in await store.tenants():
            auth.publish_state(row.name, row.auth_state)
        try:
            await supervisor.take_leases()  # before the start-up runs, so they know which tenants are this daemon's
        except BaseException:
            await self.stop()
            raise
        guard = ConnectionGuard()
        self._http = GuardedServer(build_app(supervisor, self.metrics, auth, _admin_token(self.config), supervisor, guard,
                                             instance=self.config.state.instance_name
                                             or default_instance_name(self.config.server.port),
                                             notifications=notifications),
                                   guard, SHUTDOWN_TIMEOUT_SECONDS)
        server = self.config.server
        try:
            self.bound_port = await self._http.start(server.host, server.port)
        except OSError as err:
            await self.stop()
            reason = "address already in use" if err.errno == errno.EADDRINUSE else err.strerror
            raise M365SyncError(
                f"cannot listen on {server.listen}: {reason}",
                hint="change [server] listen, or stop the process using that port",
            ) from err
        supervisor.start_tenants()
        if self.schedule:
            notifications.start()
        self.notifier.notify("READY=1\nSTATUS=serving")
        self._watchdog = asyncio.create_task(self.notifier.watchdog(), name="sd-watchdog")
        statuses = await supervisor.tenant_statuses()
        log.info(
            "m365sync started",
            listen=f"{server.host}:{self.bound_port}",
            state=db.location,
            tenants={s.tenant: s.reason for s in statuses},
        )

    async def stop(self) -> None:
        """Close the server and the database; safe to call more than once."""
        self.notifier.notify("STOPPING=1")
        if self.notifications is not None:
            await self.notifications.stop()
        if self._supervisor is not None:
            await self._supervisor.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._db is not None:
            await self._db.close()
            self._db = None
            self._store = None

    def _notifications(self, supervisor: Supervisor, auth: AuthManager, db: Database) -> Notifications:
        """Change notifications, wired to the supervisor: reads through its one entry point, the
        owner told through its ownership (the forwarding Sync now uses)."""
        ownership = supervisor.ownership
        daemon = NotifiedDaemon(lambda: supervisor.config, ownership.holds, ownership.forward_notified,
                                supervisor.graph_for, supervisor.read_now, shared=ownership.shared)
        notifications = Notifications(daemon, NotifyStore(db, self.clock.time), supervisor.store, supervisor.sync_store,
                                      auth.sealer, self.metrics, self.clock)
        ownership.on_notified = notifications.notified
        supervisor.on_run_finished = notifications.run_finished
        supervisor.on_tenants_removed = notifications.tenants_removed
        supervisor.pushed = notifications.pushed
        return notifications

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
            task = asyncio.ensure_future(reload_config(self.supervisor, self.notifier))
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
