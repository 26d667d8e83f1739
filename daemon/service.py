"""The daemon process: state database, HTTP server, systemd notifications,
and a clean shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import Mapping

from aiohttp import web

from daemon.config import Config
from daemon.errors import M365SyncError
from daemon.health import TenantStatus, tenant_status
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.sdnotify import Notifier
from daemon.server import build_app
from state.db import Database, open_database
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

    @property
    def store(self) -> Store:
        if self._store is None:
            raise M365SyncError("the service is not started")
        return self._store

    async def start(self) -> None:
        """Open the state, register tenants, listen, then tell systemd READY=1."""
        self._db = await open_database(self.config.state.path)
        self._store = Store(self._db)
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
        self._runner = web.AppRunner(
            build_app(self, self.metrics),
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


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None

