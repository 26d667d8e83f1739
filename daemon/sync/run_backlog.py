"""What a store outage left unwritten at the end of a run: its result and the
release of its run lock. Kept per tenant by the supervisor (a runner lives
for one run) and written as soon as the store answers again, so no run stays
``running`` and no lock stays held after its run ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.logging import get_logger
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)


@dataclass(frozen=True)
class UnrecordedRun:
    run_id: str
    result: str
    summary: dict[str, Any]
    error: str | None
    quiet: bool = False  # a users poll that found nothing to do: its record goes instead


@dataclass
class RunBacklog:
    runs: list[UnrecordedRun] = field(default_factory=list)
    lock_owner: str | None = None  # the owner whose run lock could not be released

    async def record(self, store: Store, run: UnrecordedRun) -> None:
        """Record the run's result, or keep it for :meth:`settle` when the store is down."""
        self.runs.append(run)
        try:
            await self.settle(store, None, "")
        except Exception as err:  # the store is down: recorded when it answers again
            log.error("could not record the run's result; recorded when the state store answers again",
                      run_id=run.run_id, error=str(err) or type(err).__name__)

    async def release(self, sync_store: SyncStore, tenant: str, owner: str) -> None:
        """Release the run lock, or keep it for :meth:`settle` when the store is down."""
        self.lock_owner = owner
        try:
            await self.settle(None, sync_store, tenant)
        except Exception as err:  # e.g. the PostgreSQL connection is cut
            log.error("could not release the run lock; released when the state store answers again",
                      error=str(err) or type(err).__name__)

    async def settle(self, store: Store | None, sync_store: SyncStore | None, tenant: str) -> None:
        """Write what is owed, oldest first; raises (and keeps the rest) while the store is down."""
        while store is not None and self.runs:
            run = self.runs[0]
            if run.quiet:
                await store.forget_run(run.run_id)
            else:
                await store.finish_run(run.run_id, run.result, run.summary, run.error)
            self.runs.pop(0)
        if sync_store is not None and self.lock_owner is not None:
            await sync_store.unlock(tenant, self.lock_owner)
            self.lock_owner = None
