"""One sync of one tenant (a :class:`~daemon.sync.kinds.SyncRequest`): its
clients, built once and shared by every kind's pipeline; for a run, the run
lock, the run record, the log context and the outcome.

Used by ``m365sync sync --once`` and by the daemon's supervisor (runs and
calendar polls). Every error of a run becomes the run's recorded result and
message; nothing escapes as a traceback.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from daemon.auth.states import DISCONNECTED
from daemon.auth.tokens import Tokens
from daemon.clock import SystemClock
from daemon.config import TenantConfig, read_secret
from daemon.errors import AuthorizationRequired, LeaseLost, M365SyncError
from daemon.graph.client import GraphClient
from daemon.graph.clouds import graph_base_url
from daemon.logging import bind, get_logger, unbind
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.retry import Clock, GraphBudget, Transport
from daemon.sync.apply import Progress
from daemon.sync.kinds import RUN_KINDS, Clients, SyncRequest, build_pipelines
from daemon.sync.report import RunReport
from daemon.sync.run_backlog import RunBacklog, UnrecordedRun
from daemon.tls import transport_ssl_context
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

ABANDONED_REASON = "interrupted: the process running it ended before recording its result"
RUN_LOCK_SECONDS = 4 * 3600.0  # longer than any run may last
PHOTOS_SUFFIX = ":photos"  # a trigger ending so checks every user's photo (sync --photos, Sync now with photos)
LOCK_OWNER = f"pid {os.getpid()} on {socket.gethostname()}"


def _process_alive(holder: str) -> bool:
    """Whether the lock's holder (``pid N on HOST``) still runs; other hosts are trusted."""
    parts = holder.split()
    if len(parts) != 4 or parts[3] != socket.gethostname() or not parts[1].isdigit():
        return True
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunResult:
    run_id: str
    tenant: str
    result: str
    report: RunReport


class TenantRunner:
    def __init__(
        self,
        tenant: TenantConfig,
        store: Store,
        sync_store: SyncStore,
        tokens: Tokens,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        clock: Clock | None = None,
        now: Callable[[], float] = time.time,
        dry_run: bool = False,
        budget: GraphBudget | None = None,
        write_guard: Callable[[], Awaitable[None]] | None = None,
        run_lock_alive: Callable[[str], bool] | None = None,
        backlog: RunBacklog | None = None,
    ) -> None:
        self.tenant = tenant
        self.store = store
        self.sync_store = sync_store
        self.tokens = tokens  # the token lifecycle only: the browser flow is the daemon's
        self.session = session
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.now = now
        self.dry_run = dry_run
        self.budget = budget or GraphBudget()
        self.write_guard = write_guard  # a shared state: raises LeaseLost once the tenant's lease is gone (see _guarded)
        self.run_lock_alive = run_lock_alive or _process_alive  # a shared state: the lease decides, not the run lock
        self.backlog = backlog or RunBacklog()  # the supervisor's, per tenant: it outlives this runner

    def _transport(self) -> Transport:
        return Transport(self.session, self.tenant.name, self.metrics,
                         ssl_context=transport_ssl_context(self.tenant.ca_file), clock=self.clock, budget=self.budget)

    def graph_client(self) -> GraphClient:
        """The tenant's Graph client, for work outside a pipeline (its change-notification subscriptions)."""
        return GraphClient(self._transport(), graph_base_url(self.tenant), self.tokens.token_provider(self.tenant.name))

    def _clients(self) -> Clients:
        """The tenant's Graph and PBX clients, for every pipeline of one request."""
        graph = self.graph_client()
        pbx = PbxClient(self._transport(), self.tenant.pbx.scim_url, read_secret(self.tenant.pbx.token_file))
        if self.dry_run:
            from daemon.pbx.dryrun import DryRunPbxClient  # only a dry run's process needs it

            return Clients(graph, pbx, DryRunPbxClient())
        return Clients(graph, pbx, self._guarded(pbx))

    async def sync(self, request: SyncRequest, progress: Progress | None = None,
                   run_id: str | None = None) -> RunResult:
        """Sync ``request.kinds`` of the tenant: a run (see :meth:`run`), or a calendar poll,
        which is neither locked nor recorded, and raises its errors to the caller."""
        if request.is_run:
            return await self.run(request.trigger, progress, run_id, kinds=request.kinds, mailboxes=request.mailboxes)
        report = RunReport()
        row = await self.store.tenant(self.tenant.name)
        if row is None or row.auth_state != DISCONNECTED:
            await self._sync(request, report, progress)
        return RunResult(run_id or "", self.tenant.name, "partial" if report.failures else "success", report)

    async def run(self, trigger: str, progress: Progress | None = None, run_id: str | None = None,
                  kinds: frozenset[str] = RUN_KINDS, mailboxes: frozenset[str] | None = None) -> RunResult:
        """One run of ``kinds``; its record is always finished, whatever happens inside.

        A typed error ends the run with its message; any other exception ends it
        ``failed`` with a one-line reason (the traceback goes to the debug log).
        Counts are those of the writes actually applied before the failure.
        Cancellation (time limit, shutdown) is left to the caller to record."""
        run_id = run_id or uuid.uuid4().hex[:12]
        name = self.tenant.name
        bind(tenant=name, run_id=run_id)
        try:
            return await self._locked_run(SyncRequest(name, kinds, trigger, mailboxes), progress, run_id)
        finally:
            unbind("tenant", "run_id")

    async def _locked_run(self, request: SyncRequest, progress: Progress | None, run_id: str) -> RunResult:
        name = self.tenant.name
        try:
            await self.backlog.settle(self.store, self.sync_store, name)  # a store outage's leftovers first
            holder = None if self.dry_run else await self.sync_store.try_lock(name, LOCK_OWNER, RUN_LOCK_SECONDS,
                                                                               self.run_lock_alive)
        except M365SyncError as err:
            return RunResult(run_id, name, "failed", RunReport(result="failed", error=err.reason))
        if holder is not None:
            message = f"another m365sync process ({holder}) is syncing tenant {name}; try again when it finishes"
            return RunResult(run_id, name, "busy", RunReport(result="busy", error=message))
        try:
            return await self._recorded_run(request, progress, run_id)
        except M365SyncError as err:  # the store failed before the run had a record
            return RunResult(run_id, name, "failed", RunReport(result="failed", error=err.reason))
        finally:
            if not self.dry_run:
                await self._unlock()

    async def _unlock(self) -> None:
        await self.backlog.release(self.sync_store, self.tenant.name, LOCK_OWNER)

    async def _recorded_run(self, request: SyncRequest, progress: Progress | None, run_id: str) -> RunResult:
        name, trigger = self.tenant.name, request.trigger
        row = await self.store.tenant(name)
        if row is not None and row.auth_state == DISCONNECTED:
            message = f"tenant {name} was disconnected; authorize it again to resume: m365sync authorize --tenant {name}"
            return RunResult(run_id, name, "disconnected", RunReport(result="disconnected", error=message))
        if not self.dry_run:  # this runner holds the lock: open runs of the tenant belong to a dead process
            await self.store.close_abandoned_runs(name, ABANDONED_REASON)
        report = RunReport()
        started = time.monotonic()
        try:
            await self.store.start_run(run_id, name, trigger)
        except M365SyncError as err:
            report.result, report.error = "failed", err.reason
            log.error("sync run could not start", error=report.error)
            return RunResult(run_id, name, report.result, report)
        try:
            (log.debug if request.routine else log.info)(  # a users poll or a backstop slice: every minute
                "sync run started", trigger=trigger, dry_run=self.dry_run)
            await self._sync(request, report, progress, all_photos=trigger.endswith(PHOTOS_SUFFIX))
        except asyncio.CancelledError:  # the run time limit or a shutdown: recorded with the counts reached
            report.result, report.error = "interrupted", "stopped by the run time limit or a shutdown"
            await self._record(run_id, report)
            raise
        except AuthorizationRequired as err:
            report.result, report.error = "reauthorization_required", err.reason
        except LeaseLost as err:  # another daemon has the tenant now: it goes on from what was applied
            report.result, report.error = "lease_lost", err.reason
        except M365SyncError as err:
            report.result, report.error = "failed", err.reason
            log.warning("sync run stopped", error=str(err))  # the upstream's own words too, in the log only
        except Exception as err:  # a run never ends without a record
            report.result, report.error = "failed", unexpected_reason(err)
            log.debug("sync run failed with an unexpected error", exc_info=True)
        quiet = request.routine and report.result == "success" and not report.counts_by_kind() \
            and not report.failures and not report.held
        await self._record(run_id, report, quiet=quiet)
        if quiet:  # every minute: a users poll or backstop slice that changed nothing leaves no record
            log.debug("poll found nothing to do", trigger=trigger, seconds=round(time.monotonic() - started, 2))
            return RunResult(run_id, name, report.result, report)
        log_method = log.info if report.result == "success" else log.warning
        log_method("sync run finished", result=report.result, counts=report.counts_by_kind(),
                   seconds=round(time.monotonic() - started, 2), error=report.error)
        return RunResult(run_id, name, report.result, report)

    async def _record(self, run_id: str, report: RunReport, *, quiet: bool = False) -> None:
        summary = {"counts": report.counts_by_kind(), "group_counts": report.groups.counts, "missing_groups": report.groups.missing,
                   "contact_counts": report.contacts.counts, "unreadable_mailboxes": report.contacts.unreadable,
                   "unreadable_mailbox_settings": report.contacts.settings_unreadable,
                   "held": len(report.held), "failures": report.failures[:50],
                   "unmatched_selected": report.unmatched_selected, "selects_nobody": report.selects_nobody,
                   "full_round": report.full_round}
        await self.backlog.record(self.store, UnrecordedRun(run_id, report.result, summary, report.error, quiet))

    async def _sync(self, request: SyncRequest, report: RunReport, progress: Progress | None, *,
                    all_photos: bool = False) -> None:
        clients = self._clients()
        for pipeline in build_pipelines(request.kinds, self.tenant, self.store, self.sync_store, clients, self.now,
                                        progress, all_photos=all_photos, mailboxes=request.mailboxes):
            await pipeline.run(report)

    def _guarded(self, pbx: PbxClient) -> PbxClient:
        """The client, asking the lease before each write request (a shared state): a run that
        lost its tenant stops before its next write, even in the middle of a chunk."""
        pbx.may_write = self.write_guard
        return pbx


def unexpected_reason(err: BaseException) -> str:
    """A one-line reason for an error outside the typed hierarchy."""
    text = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, RecursionError):
        text = "data nested too deeply to read"
    return f"unexpected error ({type(err).__name__}{': ' + text[:200] if text else ''}); details in the debug log"
