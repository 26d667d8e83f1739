"""Tenant leases on a real PostgreSQL: each tenant held by exactly one live
daemon, spread by rendezvous, taken over when a daemon goes or its
connection is cut, kept while a run is in progress, and messages reach the
owner. Rounds are driven by hand (``refresh``), not by sleeping."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import pytest

from conftest import HANG_GUARD
from daemon.clock import FakeClock
from daemon.errors import LeaseLost, M365SyncError
from daemon.leases import SharedLeases, lock_key, rendezvous_owner
from state.open import open_database

TENANTS = [f"t{i:02d}" for i in range(20)]


def test_rendezvous_moves_only_the_leaving_daemons_tenants() -> None:
    three = {t: rendezvous_owner(t, ["a", "b", "c"]) for t in TENANTS}
    two = {t: rendezvous_owner(t, ["a", "b"]) for t in TENANTS}
    assert {t for t in TENANTS if three[t] != two[t]} == {t for t in TENANTS if three[t] == "c"}
    assert set(three.values()) == {"a", "b", "c"}  # everyone gets a share
    assert rendezvous_owner("t00", []) is None
    assert lock_key("t00") == lock_key("t00") != lock_key("t00", "instance")


@pytest.fixture
async def schema(pg_url: str) -> str:
    db = await open_database(pg_url)  # the instances table comes with the migrations
    await db.close()
    return pg_url


def leases(url: str, name: str, **kwargs: Any) -> SharedLeases:
    lease = SharedLeases(url, name, 30.0, FakeClock(), **kwargs)
    lease.set_tenants(TENANTS)
    return lease


async def opened(*all_leases: SharedLeases) -> None:
    for lease in all_leases:
        await lease._connect()
    for lease in all_leases:  # every daemon is live before anyone takes its share
        await lease.refresh()


async def test_every_tenant_is_held_by_exactly_one_daemon_and_spread(schema: str) -> None:
    a, b = leases(schema, "a"), leases(schema, "b")
    try:
        await opened(a, b)
        await a.refresh()  # a took everything before b was live; b's share is handed over now
        await b.refresh()
        assert a.held.isdisjoint(b.held) and a.held | b.held == set(TENANTS)
        assert a.held == {t for t in TENANTS if rendezvous_owner(t, ["a", "b"]) == "a"}
        assert 5 <= len(a.held) <= 15
        owners = await a.owners()
        assert owners == await b.owners() and Counter(owners.values()) == Counter(a=len(a.held), b=len(b.held))
    finally:
        await a.stop()
        await b.stop()


async def test_a_daemon_that_goes_away_is_taken_over_at_the_next_round(schema: str) -> None:
    taken: list[str] = []
    a, b = leases(schema, "a"), leases(schema, "b", on_acquired=taken.append)
    try:
        await opened(a, b)
        await a.refresh()
        await b.refresh()
        a_had = set(a.held)
        taken.clear()
        await a.stop()  # its session ends: PostgreSQL frees its locks at once
        await b.refresh()
        assert b.held == set(TENANTS) and set(taken) == a_had
    finally:
        await a.stop()
        await b.stop()


async def backend_pid(lease: SharedLeases) -> int:
    assert lease._conn is not None
    return int(await lease._conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_cut_lease_session_stops_writing_and_another_daemon_takes_over(schema: str) -> None:
    lost: list[int] = []
    a, b = leases(schema, "a", on_lost=lost.append), leases(schema, "b")
    try:
        await opened(a, b)
        await a.refresh()
        await b.refresh()
        mine = sorted(a.held)[0]
        await a.check(mine)  # held: writing may go on
        admin = await asyncpg.connect(schema)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", await backend_pid(a))
        finally:
            await admin.close()
        with pytest.raises(LeaseLost, match="lost its PostgreSQL lease session|no longer holds tenant"):
            await a.check(mine)
        assert not a.holds(mine) and not a.held
        assert lost and lost[0] >= 1  # counted once (m365sync_leases_lost_total), whichever noticed first
        await b.refresh()
        assert mine in b.held and b.held == set(TENANTS)
        await a.refresh()  # a stands back one lease interval: b keeps everything
        assert not a.held and a._conn is None
        a.clock.advance(30)  # type: ignore[attr-defined]
        await a.refresh()  # a reconnects, and gets its share back only when b gives it (between runs)
        await b.refresh()
        await a.refresh()
        assert a.held.isdisjoint(b.held) and a.held | b.held == set(TENANTS) and a.held
    finally:
        await a.stop()
        await b.stop()


async def test_a_session_seen_closed_is_lost_before_its_termination_listener_runs(schema: str) -> None:
    """asyncpg calls termination listeners soon (call_soon), not at once: a check in between must
    still leave the leases lost, counted once, not held by a closed session."""
    lost: list[int] = []
    a = leases(schema, "a", on_lost=lost.append)
    try:
        await opened(a)
        await a.refresh()
        mine = sorted(a.held)[0]
        assert a._conn is not None
        a._conn.terminate()  # closed now; the listener is only scheduled
        with pytest.raises(LeaseLost):
            await a.check(mine)
        assert not a.held and a._conn is None and lost == [len(TENANTS)]
        await asyncio.sleep(0)  # the listener runs now
        assert lost == [len(TENANTS)]
    finally:
        await a.stop()


async def test_a_tenant_with_a_run_in_progress_is_handed_over_only_after_it(schema: str) -> None:
    running = {"t00", "t01", "t02", "t03", "t04", "t05"}
    a = leases(schema, "a", busy=lambda tenant: tenant in running)
    b = leases(schema, "b")
    try:
        await a._connect()
        await a.refresh()
        assert a.held == set(TENANTS)
        await b._connect()
        await a.refresh()  # b is live now: a keeps what is running, hands over the rest of b's share
        for_b = {t for t in TENANTS if rendezvous_owner(t, ["a", "b"]) == "b"}
        assert a.held & for_b == running & for_b
        running.clear()
        await a.refresh()
        await b.refresh()
        assert b.held == for_b
    finally:
        await a.stop()
        await b.stop()


async def test_a_message_reaches_the_owner_only(schema: str) -> None:
    got_a: list[dict[str, Any]] = []
    got_b: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    def to_a(message: Any) -> None:
        got_a.append(message)
        arrived.set()

    a = leases(schema, "a", on_message=to_a)
    b = leases(schema, "b", on_message=got_b.append)
    try:
        await opened(a, b)
        await a.refresh()
        await b.refresh()
        tenant = sorted(a.held)[0]
        assert await b.forward(tenant, {"kind": "sync", "trigger": "api", "run_id": "r1"})
        await asyncio.wait_for(arrived.wait(), timeout=HANG_GUARD)  # the notification arrives on a's session
        assert got_a == [{"kind": "sync", "trigger": "api", "run_id": "r1", "tenant": tenant, "to": "a", "from": "b"}]
        assert got_b == []
    finally:
        await a.stop()
        await b.stop()


async def test_two_daemons_cannot_share_an_instance_name(schema: str) -> None:
    a, again = leases(schema, "a"), leases(schema, "a")
    try:
        await a._connect()
        with pytest.raises(M365SyncError, match="already calls itself a"):
            await again._connect()
    finally:
        await a.stop()
        await again.stop()
