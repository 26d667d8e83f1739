"""When each tenant syncs: at start-up, on its crontab, after authorization,
and on "Sync now".

Each tenant has its own task, so one tenant's failure, hang or
re-authorization never delays another. At most one run per tenant runs at a
time; requests during a run queue exactly one more (with the run id handed
out at request time). A run that exceeds ``run_timeout`` is cancelled and
recorded as ``timeout``. A schedule missed while the daemon was down is
covered by the start-up run, not replayed slot by slot.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from daemon.config import TenantConfig
from daemon.logging import get_logger
from daemon.sync.kinds import RUN_KINDS, joined_mailboxes, mailboxes_read

log = get_logger(__name__)

DEFAULT_RUN_TIMEOUT_SECONDS = 3 * 3600.0


class SchedulerClock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


RunFunction = Callable[[str, str, "RunProgress"], Awaitable[str]]  # (trigger, run id, progress) -> result


def next_run_after(tenant: TenantConfig, moment: float) -> float:
    """The next time the tenant's crontab fires after ``moment``, in its time zone."""
    zone = ZoneInfo(tenant.timezone)
    start = datetime.fromtimestamp(moment, zone)
    following: datetime = croniter(tenant.sync_time, start).get_next(datetime)
    return following.timestamp()


def schedule_interval(tenant: TenantConfig, next_run: float) -> float:
    """Seconds from the next scheduled run to the one after it."""
    return next_run_after(tenant, next_run) - next_run


@dataclass
class RunProgress:
    """What ``GET /api/tenants/{name}/runs/{id}`` shows while a run is going."""

    run_id: str
    trigger: str
    state: str = "queued"  # queued | running | finished
    phase: str = "waiting"
    done: int = 0
    total: int = 0
    result: str | None = None
    due_at: float | None = None  # a scheduled run: when its crontab fired
    lateness: float | None = None  # a scheduled run: seconds from due to started (a wait for a place included)
    details: dict[str, Any] = field(default_factory=dict)
    kinds: frozenset[str] = RUN_KINDS  # a users poll syncs fewer; requests merged into it widen them
    mailboxes: frozenset[str] | None = None  # whose contacts it reads (a notification's); None: every one
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def update(self, phase: str, done: int, total: int) -> None:
        self.phase, self.done, self.total = phase, done, total

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "trigger": self.trigger, "state": self.state, "phase": self.phase,
                "done": self.done, "total": self.total, "result": self.result, **self.details}


class TenantSchedule:
    def __init__(
        self,
        tenant: TenantConfig,
        run: RunFunction,
        clock: SchedulerClock,
        run_timeout: float = DEFAULT_RUN_TIMEOUT_SECONDS,
        on_next_run: Callable[[str, float], Awaitable[None]] | None = None,
        slots: asyncio.Semaphore | None = None,
        on_started: Callable[[RunProgress], None] | None = None,
    ) -> None:
        self.tenant = tenant
        self.slots = slots  # shared by every tenant's schedule: at most so many runs at once, first due first
        self.on_started = on_started
        self._run = run
        self.clock = clock
        self.run_timeout = run_timeout
        self.on_next_run = on_next_run
        self.current: RunProgress | None = None
        self.queued: RunProgress | None = None
        self.recent: dict[str, RunProgress] = {}
        self.next_run: float | None = None
        self._wake = asyncio.Event()
        self._reschedule = asyncio.Event()
        self._retiring = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.queued = RunProgress(new_run_id(), "startup")
        self._task = asyncio.create_task(self._loop(), name=f"schedule-{self.tenant.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def reschedule(self, tenant: TenantConfig) -> None:
        """New settings (a reload): the next due time is computed again; this starts no run."""
        self.tenant = tenant
        self._reschedule.set()

    async def retire(self) -> None:
        """Stop scheduling; a run in progress finishes first (a reload never drops it)."""
        self._retiring = True
        self.queued = None
        if self.current is not None:
            await self.current.finished.wait()
        await self.stop()

    def request(self, trigger: str, run_id: str | None = None, kinds: frozenset[str] = RUN_KINDS,
                mailboxes: frozenset[str] | None = None) -> str:
        """Ask for a run of ``kinds`` (contacts of ``mailboxes`` only, when named) now; returns its id
        (``run_id``: one handed out by another daemon, which forwarded the request here). During a
        run, exactly one more is queued; a request while one is queued joins it, which then syncs the
        kinds and the mailboxes of both."""
        queued = self.queued
        if queued is None:
            queued = self.queued = RunProgress(run_id or new_run_id(), trigger, kinds=kinds, mailboxes=mailboxes)
        else:
            joined = joined_mailboxes(queued.kinds, queued.mailboxes, kinds, mailboxes)
            if not kinds <= queued.kinds or joined != mailboxes_read(queued.kinds, queued.mailboxes):
                queued.kinds |= kinds
                queued.mailboxes = joined
                queued.trigger = trigger  # the record says why it syncs more than it was queued for
        self._wake.set()
        return queued.run_id

    async def wait(self, run_id: str) -> RunProgress:
        """Wait until the run with this id (queued, running or done) has finished."""
        progress = self.progress(run_id)
        if progress is None:
            raise KeyError(run_id)
        await progress.finished.wait()
        return progress

    def progress(self, run_id: str) -> RunProgress | None:
        for candidate in (self.current, self.queued):
            if candidate is not None and candidate.run_id == run_id:
                return candidate
        return self.recent.get(run_id)

    async def _loop(self) -> None:
        while not self._retiring:
            if self.queued is None:
                if not await self._wait_for_due_time():
                    continue  # rescheduled: compute the due time again
                if self.queued is None:
                    self.queued = RunProgress(new_run_id(), "schedule", due_at=self.next_run)
            run, self.queued = self.queued, None
            self._wake.clear()
            await self._execute(run)

    async def _wait_for_due_time(self) -> bool:
        """Until the next due time or a request; False when the settings changed first."""
        now = self.clock.time()
        self.next_run = next_run_after(self.tenant, now)
        if self.on_next_run is not None:
            await self.on_next_run(self.tenant.name, self.next_run)
        timer = asyncio.ensure_future(self.clock.sleep(max(0.0, self.next_run - now)))
        waker = asyncio.ensure_future(self._wake.wait())
        rescheduled = asyncio.ensure_future(self._reschedule.wait())
        try:
            await asyncio.wait({timer, waker, rescheduled}, return_when=asyncio.FIRST_COMPLETED)
            return not (rescheduled.done() and not timer.done() and not waker.done())
        finally:
            for task in (timer, waker, rescheduled):
                task.cancel()
            await asyncio.gather(timer, waker, rescheduled, return_exceptions=True)
            self._reschedule.clear()

    async def _execute(self, run: RunProgress) -> None:
        self.current = run
        if self.slots is None:
            await self._execute_now(run)
            return
        try:
            async with self.slots:  # FIFO: the tenant that became due first starts first
                await self._execute_now(run)
        finally:
            if self.current is run:  # stopped while waiting for a place
                run.result = run.result or "interrupted"
                run.state = "finished"
                run.finished.set()
                self.current = None

    async def _execute_now(self, run: RunProgress) -> None:
        run.state = "running"
        if run.due_at is not None:
            run.lateness = max(0.0, self.clock.time() - run.due_at)
        if self.on_started is not None:
            self.on_started(run)
        task = asyncio.ensure_future(self._run(run.trigger, run.run_id, run))
        timer = asyncio.ensure_future(self.clock.sleep(self.run_timeout))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                run.result = task.result() if not task.cancelled() else "cancelled"
            else:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                run.result = "timeout"
                log.error("sync run exceeded its time limit and was stopped", tenant=self.tenant.name,
                          run_id=run.run_id, limit_seconds=self.run_timeout)
        except Exception as err:  # a bug in one run must not stop the schedule
            run.result = "failed"
            log.exception("sync run crashed", tenant=self.tenant.name, run_id=run.run_id, error=str(err))
        finally:
            timer.cancel()
            if not task.done():  # the schedule itself is being stopped: stop its run too
                task.cancel()
                run.result = run.result or "interrupted"
            await asyncio.gather(timer, task, return_exceptions=True)
            run.state = "finished"
            run.finished.set()
            self.recent[run.run_id] = run
            if len(self.recent) > 50:
                self.recent.pop(next(iter(self.recent)))
            self.current = None


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class PollLoop:
    """A fixed-interval poll (the calendar, presence, the users and the mailbox backstop): one poll at a time; a poll that
    overruns its interval makes the missed ticks skipped and counted, never stacked."""

    def __init__(
        self,
        name: str,
        interval: float,
        poll: Callable[[], Awaitable[None]],
        clock: SchedulerClock,
        on_skipped: Callable[[int], None] | None = None,
        *,
        first_after_interval: bool = False,
    ) -> None:
        self.name = name
        self.interval = interval
        self.poll = poll
        self.clock = clock
        self.on_skipped = on_skipped
        self.first_after_interval = first_after_interval  # the start-up run already did the first one
        self.polls = 0
        self.skipped = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"poll-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        if self.first_after_interval:
            await self.clock.sleep(self.interval)
        while True:
            started = self.clock.monotonic()
            try:
                await self.poll()
            except Exception as err:  # one failed poll must not end the polling
                log.exception("poll failed", poll=self.name, error=str(err))
            self.polls += 1
            elapsed = self.clock.monotonic() - started
            missed = int(elapsed // self.interval)
            if missed:
                self.skipped += missed
                if self.on_skipped is not None:
                    self.on_skipped(missed)
                log.warning("a poll overran its interval; the missed polls were skipped", poll=self.name,
                            seconds=round(elapsed, 1), skipped=missed)
            await self.clock.sleep(self.interval - elapsed % self.interval)
