"""The daemon process: state database, HTTP server, systemd notifications,
and a clean shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import Mapping

from aiohttp import web

from daemon.auth.manager import AuthManager
from daemon.config import Config, read_secret
from daemon.errors import ConfigError, M365SyncError
from daemon.health import TenantStatus, tenant_status
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.sdnotify import Notifier
from daemon.server import build_app
from state.db import Database, open_database
from state.sealing import Sealer
from state.store import Store

log = get_logger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 10.0


class Service:
    """One running m365sync: start, serve, stop."""

    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.notifier = Notifier(environ)
        self._db: Database | None = None
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.bound_port: int | None = None
        self.auth: AuthManager | None = None
        self.pending_syncs: set[str] = set()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise M365SyncError("the service is not started")
        return self._store

    async def start(self) -> None:
        """Open the state, register tenants, listen, then tell systemd READY=1."""
        self._db = await open_database(self.config.state.path)
        self._store = Store(self._db)
        self.auth = AuthManager(
            self.config, self._store, self.metrics, _sealer(self.config), on_authorized=self.request_sync
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
        self._runner = web.AppRunner(
            build_app(self, self.metrics, self.auth, _admin_token(self.config)),
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
        self.notifier.notify("READY=1\nSTATUS=serving")
        self._watchdog = asyncio.create_task(self.notifier.watchdog(), name="sd-watchdog")
        statuses = await self.tenant_statuses()
        log.info(
            "m365sync started",
            listen=f"{server.host}:{self.bound_port}",
            state=str(self.config.state.path),
            tenants={s.tenant: s.reason for s in statuses},
        )

    async def stop(self) -> None:
        """Close the server and the database; safe to call more than once."""
        self.notifier.notify("STOPPING=1")
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

    def request_sync(self, tenant: str) -> None:
        """Ask for a sync of ``tenant`` as soon as possible (after authorization, Sync now)."""
        self.pending_syncs.add(tenant)
        log.info("sync requested", tenant=tenant)

    def request_stop(self) -> None:
        self._stop.set()

    async def serve_until_stopped(self) -> None:
        """Run until SIGTERM or SIGINT (or :meth:`request_stop`), then shut down."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
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
        for status in statuses:
            self.metrics.tenant_ready.labels(tenant=status.tenant).set(1 if status.ready else 0)
        return statuses


def _sealer(config: Config) -> Sealer:
    key_file = config.state.encryption_key_file
    return Sealer(read_secret(key_file).encode() if key_file is not None else None)


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

