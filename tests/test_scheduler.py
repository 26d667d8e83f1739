"""Schedules on a manual clock: time zones and DST, start-up, Sync now during
a run, missed slots, hung tenants and the run time limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from daemon.clock import ManualClock
from daemon.scheduler import RunProgress, TenantSchedule, next_run_after
from sync_fixtures import tenant_config

HOUR = 3600.0
DAY = 24 * HOUR


class Recorder:
    """A run function that records (trigger, local time) and can be held open."""

    def __init__(self, clock: ManualClock, zone: str = "UTC") -> None:
        self.clock = clock
        self.zone = ZoneInfo(zone)
        self.runs: list[tuple[str, str]] = []
        self.hold: asyncio.Event | None = None
        self.hang = False

    async def __call__(self, trigger: str, run_id: str, progress: RunProgress) -> str:
        self.runs.append((trigger, datetime.fromtimestamp(self.clock.time(), self.zone).strftime("%m-%d %H:%M")))
        if self.hang:
            await asyncio.Event().wait()
        if self.hold is not None:
            await self.hold.wait()
        return "success"


def schedule(tmp_path: Path, clock: ManualClock, recorder: Recorder, sync_time: str, zone: str = "UTC", timeout: float = 6 * HOUR) -> TenantSchedule:
    tenant = tenant_config(tmp_path, sync_time=sync_time, timezone=zone)
    return TenantSchedule(tenant, recorder, clock, run_timeout=timeout)


async def test_cron_in_two_time_zones_across_a_dst_change(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))  # Europe moves to summer time on 29 March
    berlin, new_york = Recorder(clock, "Europe/Berlin"), Recorder(clock, "America/New_York")
    first = schedule(tmp_path, clock, berlin, "0 6 * * *", "Europe/Berlin")
    second = schedule(tmp_path, clock, new_york, "30 2 * * *", "America/New_York")
    first.start()
    second.start()
    await clock.advance_async(4 * DAY)
    assert berlin.runs == [("startup", "03-27 13:00"), ("schedule", "03-28 06:00"), ("schedule", "03-29 06:00"),
                           ("schedule", "03-30 06:00"), ("schedule", "03-31 06:00")]
    assert [t for _, t in new_york.runs] == ["03-27 08:00", "03-28 02:30", "03-29 02:30", "03-30 02:30", "03-31 02:30"]
    utc_hours = [datetime.fromtimestamp(next_run_after(first.tenant, datetime(2026, 3, d, 12, tzinfo=UTC).timestamp()), UTC).hour for d in (27, 29)]
    assert utc_hours == [5, 4]  # 06:00 Berlin is 05:00 UTC in winter, 04:00 UTC in summer
    await first.stop()
    await second.stop()


async def test_startup_run_then_next_slot_only_no_catch_up(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 11, 30, 8, 10, tzinfo=UTC))  # down since 00:00: slots 00:00 and 06:00 missed
    recorder = Recorder(clock)
    runner = schedule(tmp_path, clock, recorder, "0 */6 * * *")
    runner.start()
    await clock.advance_async(5 * HOUR)
    assert recorder.runs == [("startup", "11-30 08:10"), ("schedule", "11-30 12:00")]
    await runner.stop()


async def test_sync_now_during_a_run_queues_exactly_one_more(tmp_path: Path) -> None:
    clock = ManualClock()
    recorder = Recorder(clock)
    recorder.hold = asyncio.Event()
    runner = schedule(tmp_path, clock, recorder, "0 0 1 1 *")
    runner.start()
    await clock.settle()
    assert [t for t, _ in recorder.runs] == ["startup"]
    ids = {runner.request("sync-now") for _ in range(3)}
    assert len(ids) == 1  # the three requests share one queued run
    assert runner.progress(ids.pop()).state == "queued"  # type: ignore[union-attr]
    recorder.hold.set()
    await clock.settle()
    await clock.advance_async(HOUR)
    assert [t for t, _ in recorder.runs] == ["startup", "sync-now"]
    await runner.stop()


async def test_a_hung_tenant_does_not_delay_another(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    hung, healthy = Recorder(clock), Recorder(clock)
    hung.hang = True
    first = schedule(tmp_path, clock, hung, "0 * * * *", timeout=100 * HOUR)
    second = schedule(tmp_path, clock, healthy, "0 * * * *")
    first.start()
    second.start()
    await clock.advance_async(3 * HOUR)
    assert len(hung.runs) == 1
    assert [t for _, t in healthy.runs] == ["11-30 08:00", "11-30 09:00", "11-30 10:00", "11-30 11:00"]
    await first.stop()
    await second.stop()


async def test_the_run_timeout_ends_a_hung_run_cleanly(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    recorder = Recorder(clock)
    recorder.hang = True
    runner = schedule(tmp_path, clock, recorder, "0 12 * * *", timeout=2 * HOUR)
    runner.start()
    await clock.settle()
    startup = runner.current
    assert startup is not None
    await clock.advance_async(2 * HOUR + 1)
    assert startup.result == "timeout" and startup.state == "finished"
    assert runner.current is None
    recorder.hang = False
    await clock.advance_async(2 * HOUR)
    assert recorder.runs[-1] == ("schedule", "11-30 12:00")
    await runner.stop()


async def test_an_overrunning_poll_skips_and_counts_missed_polls_never_stacks(tmp_path: Path) -> None:
    from daemon.scheduler import PollLoop

    clock = ManualClock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    starts: list[float] = []
    running = 0
    durations = iter([10.0, 150.0, 10.0, 10.0, 10.0, 10.0])

    async def poll() -> None:
        nonlocal running
        running += 1
        assert running == 1  # never two polls at once
        starts.append(clock.monotonic() - 1000.0)
        await clock.sleep(next(durations, 10.0))
        running -= 1

    skipped: list[int] = []
    loop = PollLoop("calendar-t", 60.0, poll, clock, skipped.append)
    loop.start()
    await clock.advance_async(300)
    assert starts == [0.0, 60.0, 240.0, 300.0]  # the 150 s poll (60-210) made the ticks at 120 and 180 skipped
    assert skipped == [2] and loop.skipped == 2
    await loop.stop()


class Timed:
    """A run function that takes ``seconds`` of the manual clock (scheduled runs hang with ``hang``)."""

    def __init__(self, clock: ManualClock, name: str, started: list[tuple[str, str, float]], seconds: float,
                 hang: bool = False) -> None:
        self.clock, self.name, self.started, self.seconds, self.hang = clock, name, started, seconds, hang

    async def __call__(self, trigger: str, run_id: str, progress: RunProgress) -> str:
        self.started.append((self.name, trigger, self.clock.time()))
        if self.hang and trigger == "schedule":
            await asyncio.Event().wait()
        await self.clock.sleep(self.seconds)
        return "success"


async def test_many_tenants_take_turns_first_due_first_and_a_hung_one_holds_one_place(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    slots = asyncio.Semaphore(2)
    started: list[tuple[str, str, float]] = []
    recorded: list[RunProgress] = []
    schedules = []
    for index, minute in enumerate([0, 0, 0, 0, 1]):  # four due at :00, t4 at :01; t0's scheduled run hangs
        tenant = tenant_config(tmp_path, name=f"t{index}", sync_time=f"{minute} * * * *")
        run = Timed(clock, tenant.name, started, seconds=30, hang=index == 0)
        schedules.append(TenantSchedule(tenant, run, clock, run_timeout=600, slots=slots, on_started=recorded.append))
    for each in schedules:
        each.start()
    await clock.advance_async(HOUR)
    ten = datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()
    startup = [(name, at - ten + 1800) for name, trigger, at in started if trigger == "startup"]
    assert startup == [("t0", 0), ("t1", 0), ("t2", 30), ("t3", 30), ("t4", 60)]  # two at a time
    hourly = [(name, at - ten) for name, trigger, at in started if trigger == "schedule"]
    # t0 hangs in one place; the other place serves the rest in the order they became due.
    assert hourly == [("t0", 0), ("t1", 0), ("t2", 30), ("t3", 60), ("t4", 90)]
    lateness = {r.run_id: r.lateness for r in recorded if r.trigger == "schedule"}
    assert sorted(lateness.values()) == [0, 0, 30, 30, 60]  # t4 was due at 10:01 and started at 10:01:30
    for each in schedules:
        await each.stop()
