"""Clocks: the real one, and one that tests move by hand (shared with the simulator).

``sleep`` returns at once after advancing the clock, so a test can prove that
code waited "at least 3 s" without waiting at all.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from datetime import UTC, datetime, timedelta


class FakeClock:
    """Wall time and monotonic time that only move when told (or slept on)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
        self._monotonic = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        return self._now.timestamp()

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def set(self, moment: datetime) -> None:
        """Jump the wall clock to ``moment`` (monotonic time keeps going forward)."""
        self._monotonic += max(0.0, (moment - self._now).total_seconds())
        self._now = moment

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` and let other tasks run once."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


class SystemClock:
    """The real clock with the same interface."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock(FakeClock):
    """A fake clock whose ``sleep`` waits until a test moves time past it.

    ``await clock.advance(seconds)`` wakes every sleeper that falls due, in
    order, letting the woken tasks run before moving on, so schedules and
    timeouts can be tested exactly and without real waiting.
    """

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._counter += 1
        heapq.heappush(self._sleepers, (self._monotonic + seconds, self._counter, future))
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    async def settle(self) -> None:
        """Let every task that can run, run."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance_async(self, seconds: float) -> None:
        target = self._monotonic + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            super().advance(max(0.0, due - self._monotonic))
            future.set_result(None)
            await self.settle()
        super().advance(max(0.0, target - self._monotonic))
        await self.settle()
