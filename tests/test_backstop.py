"""The mailbox backstop spread over its interval (``daemon.backstop``,
``daemon.polls``), on a manual clock: every mailbox read exactly once per
``personal_contacts.poll_seconds``, no tick reading more than its share, a
mailbox added mid-interval read within one interval, and the calendar poll
reading every calendar each ``events.poll_seconds`` while not notified."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path
from typing import Any

from daemon.backstop import Rounds, backstop_slices
from daemon.clock import ManualClock
from daemon.metrics import Metrics
from daemon.polls import MAILBOX_POLL, tenant_polls
from daemon.scheduler import PollLoop, RunProgress, TenantSchedule
from daemon.sync.kinds import BUSY, CONTACT, POLL_KINDS, SyncRequest
from sync_fixtures import tenant_config

INTERVAL = 1800.0  # personal_contacts.poll_seconds (the default): 30 slices of a minute


def mailbox(index: int) -> str:
    return f"{index:08x}-0000-4000-8000-000000000000"


def test_a_round_reads_every_mailbox_once_and_no_tick_more_than_its_share() -> None:
    members = [mailbox(i * 7919 % 1000) for i in range(1000)]  # not in id order
    rounds = Rounds(INTERVAL)
    assert rounds.slices == 30 and rounds.tick == 60
    for _ in range(2):  # two whole rounds, the second like the first
        slices = [rounds.next_slice(members, rounds.tick * tick) for tick in range(30)]
        read = Counter(m for chosen in slices for m in chosen)
        assert set(read) == set(members) and set(read.values()) == {1}
        assert max(len(chosen) for chosen in slices) <= math.ceil(1000 / 30)
        assert min(len(chosen) for chosen in slices) >= 1000 // 30
    assert backstop_slices(300) == 5 and backstop_slices(30) == 1 and backstop_slices(90) == 1
    assert backstop_slices(1800, 70) == 25  # a calendar poll every 70 s: 25 ticks, 1750 s, within the interval


def test_a_mailbox_added_or_removed_mid_round_moves_no_other() -> None:
    members = [mailbox(i) for i in range(0, 300, 2)]  # 150, so 5 a tick
    rounds = Rounds(INTERVAL)
    read: list[list[str]] = [rounds.next_slice(members, 60.0 * tick) for tick in range(10)]
    behind, ahead = mailbox(1), mailbox(299)  # before the cursor (already passed), after it
    members += [behind, ahead]
    members.remove(mailbox(298))  # one not read yet goes
    read += [rounds.next_slice(members, 60.0 * tick) for tick in range(10, 60)]  # the rest of it, and a round
    first, second = read[:30], read[30:]
    counted = Counter(m for chosen in first for m in chosen)
    assert set(counted.values()) == {1} and ahead in counted and behind not in counted and mailbox(298) not in counted
    assert {m for m in members} == {m for chosen in second for m in chosen}  # the next round reads each
    assert max(len(chosen) for chosen in read) <= math.ceil(len(members) / 30)
    ticks_to_behind = next(t for t, chosen in enumerate(read) if behind in chosen) - 10
    assert ticks_to_behind <= 30  # within one interval of being added


def test_ticks_skipped_by_an_overrun_are_caught_up_within_the_round() -> None:
    members = [mailbox(i) for i in range(60)]
    rounds = Rounds(INTERVAL)
    read = [rounds.next_slice(members, 60.0 * tick) for tick in (0, 1, 2, 20, 21, 29)]  # ticks 3-19, 22-28 skipped
    assert sorted(m for chosen in read for m in chosen) == sorted(members)  # the round still ends on time
    assert [len(chosen) for chosen in read[:3]] == [2, 2, 2]
    assert rounds.next_slice(members, 60.0 * 30) == members[:2]  # and the next starts from the first


class Recorded:
    """A tenant's schedule and polls with a run and a calendar read that record what they were asked."""

    def __init__(self, tmp_path: Path, members: dict[str, list[str]], pushed: bool, **sections: Any) -> None:
        self.clock = ManualClock()
        self.runs: list[RunProgress] = []
        self.hold: asyncio.Event | None = None  # set: runs wait for it
        self.calendar_reads: list[frozenset[str] | None] = []
        self.members, self.pushed = members, pushed
        tenant = tenant_config(tmp_path, **sections)
        self.schedule = TenantSchedule(tenant, self._run, self.clock)

        async def members_of(kind: str) -> list[str]:
            return list(self.members[kind])

        self.polls: list[PollLoop] = tenant_polls(tenant, self.schedule, self._sync_now, self.clock, Metrics(),
                                                  members_of, lambda kind: self.pushed)

    async def _run(self, trigger: str, run_id: str, progress: RunProgress) -> str:
        self.runs.append(progress)
        if self.hold is not None:
            await self.hold.wait()
        return "success"

    async def _sync_now(self, request: SyncRequest) -> str:
        assert request.kinds == POLL_KINDS
        self.calendar_reads.append(request.mailboxes)
        return "success"

    async def start(self) -> None:
        self.schedule.start()
        for loop in self.polls:
            loop.start()
        await self.clock.settle()
        self.runs.clear()  # the start-up run

    async def stop(self) -> None:
        for loop in self.polls:
            await loop.stop()
        await self.schedule.stop()

    async def minutes(self, count: int) -> list[list[frozenset[str]]]:
        """Move on ``count`` minutes; per minute, the mailbox sets of the backstop's runs."""
        per_minute = []
        for _ in range(count):
            before = len(self.runs)
            await self.clock.advance_async(60)
            per_minute.append([run.mailboxes for run in self.runs[before:] if run.trigger == MAILBOX_POLL
                               and run.mailboxes is not None])
        return per_minute


async def test_the_backstop_reads_each_mailbox_once_an_interval_a_slice_a_minute(tmp_path: Path) -> None:
    members = {CONTACT: [mailbox(i) for i in range(100)], BUSY: []}
    recorded = Recorded(tmp_path, members, pushed=False, personal_contacts={"enabled": True})
    await recorded.start()
    try:
        first = await recorded.minutes(30)
        assert all(len(runs) == 1 for runs in first)  # a run every minute, none in a burst
        assert all(CONTACT in run.kinds for run in recorded.runs if run.trigger == MAILBOX_POLL)
        counted = Counter(m for runs in first for chosen in runs for m in chosen)
        assert set(counted) == set(members[CONTACT]) and set(counted.values()) == {1}
        assert max(len(runs[0]) for runs in first) <= math.ceil(100 / 30)

        added = mailbox(0x50)[:-1] + "1"  # between mailboxes already read this round
        members[CONTACT].append(added)
        second = await recorded.minutes(30)
        later = Counter(m for runs in second for chosen in runs for m in chosen)
        assert set(later) == set(members[CONTACT]) and set(later.values()) == {1}
        assert max(len(runs[0]) for runs in second) <= math.ceil(101 / 30)
    finally:
        await recorded.stop()


async def test_a_slice_joining_a_queued_users_poll_makes_one_run_of_both(tmp_path: Path) -> None:
    members = {CONTACT: [mailbox(i) for i in range(30)], BUSY: []}
    recorded = Recorded(tmp_path, members, pushed=False, personal_contacts={"enabled": True})
    await recorded.start()
    try:
        recorded.hold = asyncio.Event()
        recorded.schedule.request("sync-now")
        await recorded.clock.settle()
        assert recorded.runs  # a run goes on: the polls queue theirs
        await recorded.clock.advance_async(60)  # the users poll and the backstop fall due
        queued = recorded.schedule.queued
        assert queued is not None and queued.mailboxes == frozenset({mailbox(0)})
        assert queued.kinds == frozenset({"user", "group", CONTACT}) and queued.trigger in (MAILBOX_POLL, "users-poll")
        recorded.hold.set()
        await recorded.clock.settle()
        assert [run.mailboxes for run in recorded.runs] == [None, frozenset({mailbox(0)})]  # one run of both
    finally:
        await recorded.stop()


async def test_calendars_notified_are_read_a_slice_a_tick_otherwise_all_every_poll(tmp_path: Path) -> None:
    members = {CONTACT: [], BUSY: [mailbox(i) for i in range(60)]}
    recorded = Recorded(tmp_path, members, pushed=False, events={"enabled": True, "poll_seconds": 60})
    await recorded.start()
    try:
        await recorded.minutes(3)
        assert recorded.calendar_reads[-3:] == [None, None, None]  # not notified: every calendar, each poll
        recorded.pushed = True
        recorded.calendar_reads.clear()
        await recorded.minutes(30)
        assert all(chosen is not None and len(chosen) == 2 for chosen in recorded.calendar_reads)
        counted = Counter(m for chosen in recorded.calendar_reads if chosen is not None for m in chosen)
        assert set(counted) == set(members[BUSY]) and set(counted.values()) == {1}
        recorded.pushed = False  # a subscription lost: every calendar again, each poll
        await recorded.minutes(1)
        assert recorded.calendar_reads[-1] is None
    finally:
        await recorded.stop()


def test_the_backstop_ticks_follow_the_settings(tmp_path: Path) -> None:
    """A reload that changes an interval rebuilds the polls (``poll_settings``): their ticks are these."""
    def ticks(**sections: Any) -> dict[str, float]:
        tenant = tenant_config(tmp_path, **sections)
        schedule = TenantSchedule(tenant, lambda *args: asyncio.sleep(0, "success"), ManualClock())

        async def members(kind: str) -> list[str]:
            return []

        async def sync_now(request: SyncRequest) -> str:
            return "success"

        return {loop.name.split("-")[0]: loop.interval
                for loop in tenant_polls(tenant, schedule, sync_now, ManualClock(), Metrics(), members)}

    assert ticks(personal_contacts={"enabled": True})["mailboxes"] == 60
    assert ticks(personal_contacts={"enabled": True, "poll_seconds": 300})["mailboxes"] == 60
    assert ticks(personal_contacts={"enabled": True, "poll_seconds": 90})["mailboxes"] == 90


async def test_no_mailbox_to_read_queues_no_run(tmp_path: Path) -> None:
    recorded = Recorded(tmp_path, {CONTACT: [], BUSY: []}, pushed=False, shared_mailbox={"enabled": True})
    await recorded.start()
    try:
        await recorded.minutes(3)
        assert [run for run in recorded.runs if run.mailboxes is not None] == []
        assert all(run.trigger != MAILBOX_POLL for run in recorded.runs)
    finally:
        await recorded.stop()


def test_a_slice_and_the_users_poll_joined_either_way_are_routine() -> None:
    """A run of the two polls that changed nothing leaves no record, whichever of them was queued first."""
    assert SyncRequest("t", frozenset({CONTACT}), MAILBOX_POLL, frozenset({"a"})).routine
    assert SyncRequest("t", frozenset({"user", "group", CONTACT}), "users-poll", frozenset({"a"})).routine
    assert SyncRequest("t", frozenset({"user", "group"}), "users-poll").routine
    assert not SyncRequest("t", frozenset({"user", "group", CONTACT}), "users-poll").routine  # a whole run
    assert not SyncRequest("t", frozenset({CONTACT}), "notification", frozenset({"a"})).routine
