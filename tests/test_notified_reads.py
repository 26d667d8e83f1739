"""What a change notification costs (issue 25): a contact or calendar
notification for one mailbox reads that mailbox alone (counted in the
simulator's ``$batch`` items), the calendar poll falls back to the mailbox
backstop's interval while every calendar is notified, a queued run joins the
mailboxes of the requests it merges, and the subscription keeper runs only
after a run that changed something, or when a round of its own is due
(renewals), never after a users poll that found nothing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import until
from daemon.auth.states import AUTHORIZED, DISCONNECTED
from daemon.clock import ManualClock
from daemon.notify import subscriptions
from daemon.notify.subscriptions import KeeperRound, SubscriptionKeeper
from daemon.polls import MAILBOX_POLL, USERS_POLL
from daemon.scheduler import RunProgress, TenantSchedule
from daemon.sync.kinds import RUN_KINDS, USERS_POLL_KINDS
from notify_fixtures import TENANT, Notified, start_notified
from scenario import hire_id, user_id
from sim.app import LoggedRequest
from sim.pbx import ScimServer
from state.notify_store import ACTIVE, HANDSHAKE, KEEPER_ROUND, REAUTHORIZE, REMOVED
from sync_fixtures import tenant_config


def _graph_reads(setup: Notified, since: int) -> list[LoggedRequest]:
    """The Graph requests after the ``since``-th, the keeper's (``/subscriptions``) left out."""
    assert setup.world.sim is not None
    return [r for r in setup.world.sim.log[since:] if not r.path.startswith("/subscriptions")]


async def _notified_runs_done(setup: Notified, count: int) -> None:
    async def done() -> bool:
        await setup.clock.settle()
        return await setup.finished_runs("notification") >= count

    await until(done, 30, "the notified read")


async def test_a_notified_contact_reads_that_mailboxs_contacts_alone(notified: Notified) -> None:
    assert notified.world.sim is not None
    since = len(notified.world.sim.log)
    notified.world.tenant.put_contact(user_id(1), "c-001-0", displayName="Only Mine", mobilePhone="+1 555 0100")
    assert {d.status for d in await notified.graph.deliver()} == {202}
    await notified.settle_window()
    await _notified_runs_done(notified, 1)
    reads = _graph_reads(notified, since)
    items = [r for r in reads if r.in_batch]
    assert items and all(r.path.startswith(f"/users/{user_id(1)}/contactFolders/") for r in items), items
    assert [r.path for r in reads if not r.in_batch] == ["/$batch"]  # no users or groups delta, one batch
    (run,) = await notified.runs("notification")
    assert run.result == "success" and run.summary["contact_counts"] == {"update": 1}
    # what it planned is no longer dirty: the next directory run does not plan it again
    assert await notified.service.sync_store.dirty_ids(TENANT, "contact") == set()


async def test_a_notified_calendar_reads_that_calendar_alone(tmp_path: Path, scim_server_one_by_one: ScimServer
                                                             ) -> None:
    setup = await start_notified(tmp_path / "world", scim_server_one_by_one,
                                 sections="\n[tenants.events]\nenabled = true\n")
    try:
        assert setup.world.sim is not None

        async def subscribed() -> bool:
            await setup.clock.settle()
            return all(f"users/{user_id(i)}/events" in setup.resource_ids() for i in range(1, 7))

        await until(subscribed, 30, "the calendar subscriptions")
        since = len(setup.world.sim.log)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        moment = {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}
        setup.world.tenant.put_event(user_id(2), "meeting", showAs="busy", isCancelled=False, isAllDay=False,
                                     start=moment, end={**moment, "dateTime": (start + timedelta(minutes=30))
                                                        .strftime("%Y-%m-%dT%H:%M:%S.0000000")})
        assert {d.status for d in await setup.graph.deliver()} == {202}
        await setup.settle_window()

        async def read() -> bool:
            await setup.clock.settle()
            return any(r.in_batch for r in _graph_reads(setup, since))

        await until(read, 30, "the notified calendar read")
        items = [r for r in _graph_reads(setup, since) if r.in_batch]
        assert [r.path.split("?")[0] for r in items] == [f"/users/{user_id(2)}/calendarView/delta"]

        # Every calendar notified: each minute's calendar poll reads one slice of the calendars (6 calendars
        # over the 30 minutes of the mailbox backstop: one a minute at most), and all of them in 30 minutes.
        assert setup.service.notifications is not None and setup.service.notifications.pushed(TENANT, "busy")
        calendars = len(setup.world.sim.requests("/calendarView/delta$"))
        (poll,) = [loop for loop in setup.service.supervisor.polls[TENANT] if loop.name.startswith("calendar-")]
        counts = []
        for _ in range(30):  # [tenants.personal_contacts] poll_seconds: the round, a tick a minute
            ticks = poll.polls
            await setup.clock.advance_async(60)  # [tenants.events] poll_seconds

            async def ticked(ticks: int = ticks) -> bool:  # the tick's read finished before the clock moves on
                await setup.clock.settle()
                return poll.polls > ticks

            await until(ticked, 30, "the calendar poll's tick")
            counts.append(len(setup.world.sim.requests("/calendarView/delta$")) - calendars)
        assert counts == [1, 2, 3, 4, 5] + [6] * 25  # a calendar a minute, not six at once
        read = [r.path.split("/")[2] for r in setup.world.sim.requests("/calendarView/delta$")[calendars:]]
        assert sorted(read) == sorted(user_id(i) for i in range(1, 7))  # each once
    finally:
        await setup.service.stop()
        await setup.world.stop()


async def test_the_keeper_runs_after_a_change_or_when_due_never_after_a_quiet_poll(
        notified: Notified, monkeypatch: pytest.MonkeyPatch) -> None:
    notifications, sim = notified.service.notifications, notified.world.sim
    assert notifications is not None and sim is not None
    schedule = notified.service.supervisor.schedules[TENANT]
    rounds: list[str] = []
    keep = SubscriptionKeeper.keep

    async def counted(keeper: SubscriptionKeeper, *, enabled: bool = True) -> KeeperRound:
        rounds.append(keeper.tenant.name)
        return await keep(keeper, enabled=enabled)

    monkeypatch.setattr(SubscriptionKeeper, "keep", counted)

    async def users_poll() -> RunProgress:
        before = set(schedule.recent)
        await notified.clock.advance_async(60)  # [tenants.users] poll_seconds (the backstop's slice comes too)
        runs = [schedule.current, schedule.queued, *(r for i, r in schedule.recent.items() if i not in before)]
        run = next((r for r in runs if r is not None and "user" in r.kinds), None)
        assert run is not None and run.trigger in (USERS_POLL, MAILBOX_POLL)  # the slice may have joined it
        done = await schedule.wait(run.run_id)
        await notified.clock.settle()
        return done

    assert (await users_poll()).result == "success"  # nothing changed
    await notifications.round()  # the keeper's own cadence: nothing due either
    assert rounds == []

    notified.world.tenant.add_user(hire_id(1), displayName="New Hire", userPrincipalName="hire@contoso.example",
                                   mail="hire@contoso.example", accountEnabled=True, userType="Member")
    notified.graph.drop_pending()  # the users poll finds the hire, not a notification
    await users_poll()

    async def subscribed() -> bool:
        await notified.clock.settle()
        return f"users/{hire_id(1)}/contacts" in notified.resource_ids()

    await until(subscribed, 30, "the new mailbox's subscription")
    assert rounds == [TENANT]

    notified.clock.advance(4 * 86400)  # past half the Outlook lifetime: renewals are due
    await notifications.round()
    assert len(rounds) >= 2
    assert [r for r in sim.requests("^/subscriptions/") if r.method == "PATCH"]


async def test_a_queued_run_reads_the_mailboxes_of_every_request_it_joins(tmp_path: Path) -> None:
    clock = ManualClock()
    started: list[tuple[frozenset[str], frozenset[str] | None]] = []
    hold = asyncio.Event()

    async def run(trigger: str, run_id: str, progress: RunProgress) -> str:
        started.append((progress.kinds, progress.mailboxes))
        await hold.wait()
        return "success"

    schedule = TenantSchedule(tenant_config(tmp_path), run, clock)
    schedule.start()
    await clock.settle()  # the start-up run is running (held)
    contact = frozenset({"contact"})
    first = schedule.request("notification", kinds=contact, mailboxes=frozenset({"a"}))
    assert schedule.request("notification", kinds=contact, mailboxes=frozenset({"b"})) == first
    assert schedule.queued is not None and schedule.queued.mailboxes == {"a", "b"}
    schedule.request(USERS_POLL, kinds=USERS_POLL_KINDS)  # a users poll reads no mailbox: still a and b
    assert schedule.queued.kinds == RUN_KINDS and schedule.queued.mailboxes == {"a", "b"}
    hold.set()
    await schedule.wait(first)
    hold.clear()
    second = schedule.request("notification", kinds=contact, mailboxes=frozenset({"c"}))
    schedule.request("sync-now")  # a whole run: every mailbox
    assert schedule.queued is not None and schedule.queued.mailboxes is None
    hold.set()
    await schedule.wait(second)
    assert started[1:] == [(RUN_KINDS, frozenset({"a", "b"})), (RUN_KINDS, None)]
    await schedule.stop()


async def test_creates_are_paced_so_their_handshakes_leave_room_on_the_endpoint(
        notified: Notified, monkeypatch: pytest.MonkeyPatch) -> None:
    notifications = notified.service.notifications
    graph = await notified.service.supervisor.graph_for(TENANT)
    config = notified.service.config
    tenant = config.find_tenant(TENANT)
    assert notifications is not None and graph is not None and tenant is not None
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(subscriptions, "CREATES_PER_SECOND", 3)
    keeper = SubscriptionKeeper(tenant, config.server.public_url or "", graph, notifications.store,
                                notifications.sync_store, notifications.sealer, notified.clock.time, pause)
    assert (await keeper.keep(enabled=False)).deleted == 8 and notified.graph.subscriptions == {}
    assert (await keeper.keep()).created == 8
    assert pauses == [1.0, 1.0]  # after the 3rd and the 6th: at most 3 a second


async def test_keeper_rounds_of_a_tenant_take_turns(notified: Notified) -> None:
    notifications = notified.service.notifications
    assert notifications is not None and notified.world.sim is not None
    await notified.service.store.set_auth_state(TENANT, DISCONNECTED, reason="m365sync disconnect")
    await notifications.keep(TENANT)
    assert notified.graph.subscriptions == {}
    await notified.service.store.set_auth_state(TENANT, AUTHORIZED)
    creates = len(notified.world.sim.requests("^/subscriptions$"))
    await asyncio.gather(notifications.keep(TENANT), notifications.keep(TENANT))  # e.g. a run's end and the loop's
    assert len(notified.world.sim.requests("^/subscriptions$")) - creates == 8 == len(notified.graph.subscriptions)


class _CountedReads:
    """The notification store's database, its reads counted by table (its writes pass through)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.reads: list[str] = []

    async def fetchall(self, sql: str, params: Any = ()) -> Any:
        self.reads.append(sql)
        return await self.db.fetchall(sql, params)

    async def fetchone(self, sql: str, params: Any = ()) -> Any:
        self.reads.append(sql)
        return await self.db.fetchone(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_keeper_round_reads_the_subscriptions_and_the_handshake_once(
        notified: Notified, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once by the expiry index, without their secrets, also when it renews, creates and deletes: the
    gauges and the next round follow from what the round did, not from reading it all again."""
    notifications = notified.service.notifications
    assert notifications is not None and notified.world.sim is not None
    counted = _CountedReads(notifications.store.db)
    monkeypatch.setattr(notifications.store, "db", counted)
    await notifications.keep(TENANT)  # nothing to do
    assert counted.reads == [KEEPER_ROUND, HANDSHAKE], counted.reads
    ids = notified.resource_ids()
    renewals = len([r for r in ids if r.endswith("/contacts")])
    store = notifications.store
    for resource, state in (("groups", REMOVED), ("users", REAUTHORIZE)):  # as the lifecycle endpoint marks them
        stored = await store.subscription(TENANT, ids[resource])
        assert stored is not None
        await store.put_subscription(TENANT, replace(stored, state=state, reason="a lifecycle event"))
    del notified.graph.subscriptions[ids["groups"]]  # Graph removed that one
    notified.clock.advance(4 * 86400)  # and the Outlook ones are due for renewal
    counted.reads.clear()
    await notifications.keep(TENANT)
    assert counted.reads == [KEEPER_ROUND, HANDSHAKE], counted.reads
    patched = [r for r in notified.world.sim.requests("^/subscriptions/") if r.method == "PATCH"]
    assert len(patched) == renewals
    assert notified.world.sim.requests(f"^/subscriptions/{ids['users']}/reauthorize$")
    assert set(notified.resource_ids()) == set(ids) and notified.resource_ids()["groups"] != ids["groups"]
    assert {s.state for s in await store.kept(TENANT)} == {ACTIVE}
    gauge = notifications.metrics.registry.get_sample_value("m365sync_subscriptions", {"tenant": TENANT,
                                                                                       "state": "active"})
    assert gauge == len(notified.graph.subscriptions) == 8


async def test_a_leavers_contacts_go_with_the_next_backstop_slice(notified: Notified) -> None:
    """The users poll disables a leaver and marks his contacts; the next slice of the mailbox backstop,
    whichever mailboxes it reads, deletes them (as the whole-run backstop did before it was spread)."""
    sync_store = notified.service.sync_store
    assert await sync_store.synced_of(TENANT, "contact", ["c-001-0"])  # user 1's contact, on the PBX
    notified.world.tenant.change_user(user_id(1), accountEnabled=False)
    notified.graph.drop_pending()  # the users poll finds the leaver, not a notification

    async def gone() -> bool:  # a minute at a time: the users poll, then a slice (the same minute or the next)
        await notified.clock.advance_async(60)
        return not await sync_store.synced_of(TENANT, "contact", ["c-001-0"])

    await until(gone, 30, "the leaver's contacts deleted")
    assert not await sync_store.synced_of(TENANT, "contact", ["c-001-0"])
    slices = [run for run in await notified.runs(MAILBOX_POLL) if run.summary["contact_counts"]]
    assert [run.summary["contact_counts"] for run in slices] == [{"delete": 1}]
