"""Progress of a long run: kept for the runs API, logged at a steady interval."""

from __future__ import annotations

from daemon.logging import get_logger
from daemon.scheduler import RunProgress, SchedulerClock

log = get_logger(__name__)

LOG_INTERVAL_SECONDS = 15.0


class ProgressLog:
    """A progress callback: updates the run's progress and logs done/total,
    rate and ETA at most every ``interval`` seconds."""

    def __init__(self, progress: RunProgress, clock: SchedulerClock, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.progress = progress
        self.clock = clock
        self.interval = interval
        self._started = clock.time()
        self._last_log = self._started

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.progress.update(phase, done, total)
        now = self.clock.time()
        if now - self._last_log < self.interval:
            return
        self._last_log = now
        rate = done / max(now - self._started, 1e-6)
        eta = (total - done) / rate if total and rate > 0 else None
        log.info("sync progress", phase=phase, done=done, total=total or None, per_second=round(rate, 1),
                 eta_seconds=round(eta) if eta is not None else None)
