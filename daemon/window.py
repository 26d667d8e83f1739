"""A bounded window of jobs in flight: the next job starts while earlier ones
are still waiting on the PBX, never more than ``bound`` at once.

The applier runs each chunk (materialize, journal, send, record) as one job,
so the next request is built and sent while the PBX works on the current one;
the PBX client sends the requests of one chunk (split by the announced
payload size) the same way.
Jobs start in order. After a job fails no new job starts; the jobs already
running are let finish (what the PBX answered them is recorded), then the
first error is raised as it was, so callers see the same typed errors
(``LeaseLost``, ``PbxUnavailable``, ``StateWriteFailed``) as without a window.
Cancelling the window cancels its jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

Job = Callable[[], Awaitable[None]]


async def run_windowed(jobs: Iterable[Job], bound: int) -> None:
    """Run ``jobs`` in order with at most ``bound`` (at least 1) running at once."""
    running: set[asyncio.Future[None]] = set()
    error: BaseException | None = None

    async def settle_one() -> None:
        nonlocal running, error
        done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = task.exception()  # retrieved even when it is not the first one
            if failure is not None and error is None:
                error = failure

    try:
        for job in jobs:
            while len(running) >= max(1, bound) and error is None:
                await settle_one()
            if error is not None:
                break
            running.add(asyncio.ensure_future(job()))
        while running:
            await settle_one()
    except BaseException:  # cancelled from outside: the jobs go with it
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    if error is not None:
        raise error
