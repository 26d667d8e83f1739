"""Clocks: the real one, and one that tests move by hand (shared with the simulator).

``sleep`` returns at once after advancing the clock, so a test can prove that
code waited "at least 3 s" without waiting at all.
"""

from __future__ import annotations

import asyncio
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
