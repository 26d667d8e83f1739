"""The daemon's fast polls on a manual clock (no sleeps): a user added in
Graph reaches the PBX on the next users poll, a users poll that finds nothing
costs one Graph request and reads no mailbox, and a presence change reaches
the PBX on the next presence poll, through the one entry point."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from daemon.clock import ManualClock
from daemon.config import load_config
from daemon.metrics import Metrics
from daemon.pbx.schema import PBX_USER
from daemon.polls import USERS_POLL, tenant_polls
from daemon.scheduler import RunProgress, TenantSchedule
from daemon.service import Service
from daemon.sync.kinds import RUN_KINDS, USERS_POLL_KINDS, SyncRequest
from live_fixtures import LiveEnv, started_live_env
from sim.pbx import ScimServer
from sync_fixtures import tenant_config

SECTIONS = """poll_seconds = 60

[tenants.presence]
enabled = true
poll_seconds = 30
"""


def add_user(env: LiveEnv, index: int) -> str:
    user_id = f"00000000-0000-4000-8000-{index:012d}"
    env.tenant.add_user(user_id, displayName=f"User {index}", userPrincipalName=f"user{index:03d}@contoso.example",
                        mail=f"user{index:03d}@contoso.example", accountEnabled=True, userType="Member")
    return user_id


@asynccontextmanager
async def daemon(env: LiveEnv, clock: ManualClock) -> AsyncIterator[tuple[Service, TenantSchedule]]:
    """The daemon on the manual clock, once its start-up run is done, and its tenant's schedule."""
    service = Service(load_config(env.config), environ={}, clock=clock)
    await service.start()
    try:
        schedule = service.supervisor.schedules["contoso"]
        startup = schedule.current or schedule.queued
        assert startup is not None
        assert (await schedule.wait(startup.run_id)).result == "success"
        yield service, schedule
    finally:
        await service.stop()


async def next_poll_run(schedule: TenantSchedule, clock: ManualClock, seconds: float) -> RunProgress:
    """Move the clock on by ``seconds``; the users poll's run it started, once finished."""
    await clock.advance_async(seconds)
    run = schedule.current or schedule.queued
    assert run is not None, "the users poll queued no run"
    return await schedule.wait(run.run_id)


async def test_a_new_user_reaches_the_pbx_on_the_next_users_poll(tmp_path: Path, scim_server_one_by_one: ScimServer) -> None:
    clock = ManualClock()
    async with started_live_env(tmp_path, scim_server_one_by_one, tenant_sections=SECTIONS) as env:
        first = add_user(env, 1)
        async with daemon(env, clock) as (service, schedule):
            assert set(await env.pbx_users()) == {first}
            newcomer = add_user(env, 2)
            await clock.advance_async(30)  # half the interval: no users poll yet
            assert schedule.current is None and schedule.queued is None
            assert newcomer not in await env.pbx_users()
            run = await next_poll_run(schedule, clock, 30)
            assert run.trigger == USERS_POLL and run.result == "success"
            assert run.kinds == frozenset({"user", "group"})
            assert newcomer in await env.pbx_users()  # at most users.poll_seconds after it appeared in Graph

            users_delta, mailboxes = len(env.sim.requests(r"^/users/delta")), len(env.sim.requests(r"^/users/[^/]+/"))
            quiet = await next_poll_run(schedule, clock, 60)
            assert quiet.trigger == USERS_POLL and quiet.result == "success"
            assert len(env.sim.requests(r"^/users/delta")) - users_delta == 1  # nothing changed: one request
            assert len(env.sim.requests(r"^/users/[^/]+/")) == mailboxes  # and no mailbox read
            assert await service.store.run(quiet.run_id) is None  # a poll that changed nothing leaves no record
            assert (await service.store.run(run.run_id)) is not None  # the one that created a user does

async def test_a_presence_change_reaches_the_pbx_on_the_next_presence_poll(
        tmp_path: Path, scim_server_one_by_one: ScimServer) -> None:
    clock = ManualClock()
    async with started_live_env(tmp_path, scim_server_one_by_one, tenant_sections=SECTIONS) as env:
        alice = add_user(env, 1)
        async with daemon(env, clock) as (service, _):
            assert env.sim is not None
            env.sim.api.presence.set(alice, "Busy", "InACall")
            calls = len(env.sim.requests(r"^/communications/getPresencesByUserId$"))
            await clock.advance_async(30)  # the presence poll's interval
            written = 'm365sync_presence_writes_total{action="update",tenant="contoso"} 1.0'

            async def polled() -> bool:  # the poll's metrics, counted once it returned
                return written in service.metrics.render().decode()

            await until(polled, clock, "the presence poll to finish")
            assert (await env.pbx_users())[alice][PBX_USER]["presence"] == {"availability": "Busy", "activity": "InACall"}
            assert len(env.sim.requests(r"^/communications/getPresencesByUserId$")) > calls
            assert 'm365sync_presence_polls_total{result="success",tenant="contoso"}' in service.metrics.render().decode()


async def until(done: Callable[[], Awaitable[bool]], clock: ManualClock, what: str) -> None:
    """The poll's HTTP round trips are real I/O: let the loop run until ``done`` (no sleep; a minute
    of real time at most, for a loaded machine)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await done():
            return
        await clock.settle()
    raise AssertionError(f"waited in vain for {what}")


async def test_a_request_joining_a_queued_users_poll_widens_it_to_a_whole_run(tmp_path: Path) -> None:
    clock = ManualClock()
    started: list[tuple[str, frozenset[str]]] = []
    hold = asyncio.Event()

    async def run(trigger: str, run_id: str, progress: RunProgress) -> str:
        started.append((trigger, progress.kinds))
        await hold.wait()
        return "success"

    schedule = TenantSchedule(tenant_config(tmp_path), run, clock)
    schedule.start()
    await clock.settle()  # the start-up run is running (held)
    first = schedule.request(USERS_POLL, kinds=USERS_POLL_KINDS)
    assert schedule.request(USERS_POLL, kinds=USERS_POLL_KINDS) == first  # a second poll joins the first
    assert schedule.queued is not None and schedule.queued.kinds == USERS_POLL_KINDS
    assert schedule.request("sync-now") == first  # Sync now joins it too, and it becomes a whole run
    assert schedule.queued.kinds == RUN_KINDS and schedule.queued.trigger == "sync-now"
    hold.set()
    await schedule.wait(first)
    assert started == [("startup", RUN_KINDS), ("sync-now", RUN_KINDS)]
    await schedule.stop()


def test_the_polls_a_tenant_gets_follow_its_settings(tmp_path: Path) -> None:
    def names(**sections: object) -> list[str]:
        tenant = tenant_config(tmp_path, **sections)
        schedule = TenantSchedule(tenant, lambda *args: asyncio.sleep(0, "success"), ManualClock())

        async def sync_now(request: SyncRequest) -> str:
            return "success"

        async def members(kind: str) -> list[str]:
            return []

        return [loop.name.split("-")[0]
                for loop in tenant_polls(tenant, schedule, sync_now, ManualClock(), Metrics(), members)]

    assert names() == ["users"]
    assert names(events={"enabled": True}, presence={"enabled": True}, personal_contacts={"enabled": True}) == [
        "calendar", "presence", "users", "mailboxes"]
    assert names(shared_mailbox={"enabled": True}) == ["users", "mailboxes"]
    assert names(presence={"enabled": True}, national_cloud="CHINA") == ["users"]  # no presence API there
