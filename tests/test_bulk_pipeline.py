"""Writes at the PBX's size and pace: /Bulk requests as large as the PBX
announces (maxOperations, and maxPayloadSize to the byte), the next request
sent while the PBX works on the current one, never more than two in flight,
creates before the memberships that name them and deletes last, the lease
asked before every write request; and the window that runs the chunks."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from daemon.clock import FakeClock
from daemon.metrics import Metrics
from daemon.pbx.bulk import bulk_body, bulk_requests
from daemon.pbx.client import PbxClient
from daemon.pbx.connection import encoded_body
from daemon.pbx.types import PbxOperation, ProviderConfig
from daemon.sync.apply import REQUESTS_IN_FLIGHT
from daemon.window import run_windowed
from live_fixtures import NO_BULK
from pbx_fixtures import PbxEnv, make_client
from sim.generator import generate_tenant
from sim.pbx import ScimServer
from sync_fixtures import SyncEnv

MAX_OPERATIONS = 200
USERS = 450
SALES = "aaaaaaaa-0000-4000-8000-00000000000a"
ANNOUNCING = {**NO_BULK, "bulk": {"supported": True, "maxOperations": MAX_OPERATIONS, "maxPayloadSize": 1048576}}
SMALL_PAYLOADS = {**NO_BULK, "bulk": {"supported": True, "maxOperations": 1000, "maxPayloadSize": 30000}}
PBX_CONFIGS = {"bulk": ANNOUNCING, "one-by-one": NO_BULK, "small payloads": SMALL_PAYLOADS}


# --- the window ---


async def settle() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_window_runs_jobs_in_order_never_more_than_its_bound_at_once() -> None:
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(5)]
    running = [0, 0]  # now, most

    def job(index: int) -> Any:
        async def run() -> None:
            started.append(index)
            running[0] += 1
            running[1] = max(running[1], running[0])
            await gates[index].wait()
            running[0] -= 1
        return run

    window = asyncio.ensure_future(run_windowed([job(i) for i in range(5)], 2))
    await settle()
    assert started == [0, 1]  # the second starts before the first is done
    gates[1].set()
    await settle()
    assert started == [0, 1, 2]  # a free slot is taken by the next job at once, whichever job ended
    for gate in gates:
        gate.set()
    await window
    assert started == [0, 1, 2, 3, 4] and running == [0, 2]


async def test_after_a_failure_no_job_starts_the_running_ones_finish_and_the_first_error_is_raised() -> None:
    finished: list[int] = []
    release = asyncio.Event()

    async def fails() -> None:
        raise LookupError("the first error")

    async def slow() -> None:
        await release.wait()
        finished.append(1)

    async def never() -> None:
        finished.append(2)

    async def second_fails() -> None:
        raise KeyError("later")

    window = asyncio.ensure_future(run_windowed([slow, fails, never, second_fails], 2))
    await settle()
    assert not window.done()  # the running job is waited for: its answer gets recorded
    release.set()
    with pytest.raises(LookupError, match="the first error"):
        await window
    assert finished == [1]


async def test_cancelling_the_window_cancels_its_jobs() -> None:
    cancelled: list[int] = []

    async def waits(index: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(index)
            raise

    window = asyncio.ensure_future(run_windowed([lambda: waits(0), lambda: waits(1), lambda: waits(2)], 2))
    await settle()
    window.cancel()
    with pytest.raises(asyncio.CancelledError):
        await window
    assert sorted(cancelled) == [0, 1]


# --- request sizes ---


def test_bulk_requests_stay_under_the_announced_payload_size_to_the_byte() -> None:
    config = ProviderConfig(bulk=True, bulk_max_operations=1000, bulk_max_payload_size=4000, etag=True)
    names = itertools.cycle(["Zoë Ångström", "Иван Петров", "李小龍", "Plain Name", "x" * 300])
    operations = [PbxOperation("create", "User", f"id-{i}", payload={"userName": f"u{i}@x.example",
                                                                   "displayName": next(names)})
                  for i in range(300)]
    operations += [PbxOperation("update", "User", f"up-{i}", operations=[{"op": "replace", "path": "title",
                                                                          "value": "Ünïcode " * (i % 9)}],
                                pbx_id=f"pbx-{i}", etag=f'W/"{i}"') for i in range(100)]
    requests = bulk_requests(operations, config)
    split = [request.operations for request in requests]
    assert [op for chunk in split for op in chunk] == operations
    assert max(len(request.body) for request in requests) <= 4000
    for chunk, following in itertools.pairwise(split):  # each request is as full as the limit allows
        assert len(encoded_body(bulk_body([*chunk, following[0]], config.etag))) > 4000


def test_bulk_requests_hold_as_many_operations_as_announced() -> None:
    config = ProviderConfig(bulk=True, bulk_max_operations=1000, bulk_max_payload_size=0)
    operations = [PbxOperation("delete", "User", f"id-{i}", pbx_id=f"p{i}") for i in range(2500)]
    assert [len(r.operations) for r in bulk_requests(operations, config)] == [1000, 1000, 500]


# --- a run against scim2-server behind a proxy that watches the writes ---


class WindowProxy:
    """Forwards to scim2-server; notes each write request's size, what it carried
    (``POST Users``, ``DELETE Groups``...) and when it started and ended (a shared
    sequence), how many were in flight at most; holds the first write of a run
    until a second one arrives (which only a pipelined writer sends)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.sizes: list[int] = []
        self.spans: list[tuple[int, int, set[str]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.overlapped = False
        self._events = itertools.count()
        self._first: asyncio.Event | None = None

    def hold_first_write(self) -> None:
        self._first = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        write = request.method != "GET"
        if write:
            started = next(self._events)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.sizes.append(len(raw))
            await self._hold()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.target + request.path_qs.split("/v2", 1)[1], data=raw,
                                       headers=headers) as answer:
                response = web.Response(status=answer.status, body=await answer.read(), headers={
                    k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "etag", "location")})
        if write:
            self.in_flight -= 1
            self.spans.append((started, next(self._events), carried(request.method, request.path, raw)))
        return response

    async def _hold(self) -> None:
        first = self._first
        if first is None:
            return
        if first.is_set() or self.in_flight > 1:
            first.set()
            return
        try:
            await asyncio.wait_for(first.wait(), timeout=30)  # a writer that waits for this answer never sends one
            self.overlapped = True
        except TimeoutError:
            pass
        self._first = None

    def writes(self) -> int:
        return len(self.spans)

    def ended_before_started(self, first: str, then: str) -> bool:
        """Every request carrying ``first`` was answered before any carrying ``then`` was sent."""
        last_end = max((end for _, end, what in self.spans if first in what), default=-1)
        first_start = min((start for start, _, what in self.spans if then in what), default=1 << 30)
        return last_end < first_start


def carried(method: str, path: str, raw: bytes) -> set[str]:
    if path.endswith("/Bulk"):
        return {f"{op['method']} {op['path'].split('/')[1]}" for op in json.loads(raw)["Operations"]}
    return {f"{method} {path.split('/v2/', 1)[1].split('/')[0]}"}


@pytest.fixture(params=list(PBX_CONFIGS))
def pbx_config(request: pytest.FixtureRequest) -> Iterator[tuple[str, ScimServer]]:
    with ScimServer(service_provider_config=PBX_CONFIGS[request.param]) as server:
        yield request.param, server


@pytest.fixture
async def pbx(pbx_config: tuple[str, ScimServer]) -> AsyncIterator[PbxEnv]:
    """The PBX of ``sync_env``: this module's scim2-server, with its ServiceProviderConfig."""
    _, server = pbx_config
    metrics, clock = Metrics(), FakeClock()
    async with aiohttp.ClientSession() as session:
        yield PbxEnv(server, "pipeline", make_client(server, "pipeline", session, metrics, clock), metrics, clock)


@asynccontextmanager
async def watching(env: SyncEnv) -> AsyncIterator[tuple[WindowProxy, PbxClient, list[int]]]:
    """A :class:`WindowProxy` before ``env``'s PBX, a writer through it, and the count of lease checks
    that writer made (the checks of a run read the PBX directly)."""
    proxy = WindowProxy(env.pbx.server.url(env.pbx.tenant))
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client, asked = env.pbx.client, [0]
    writer = PbxClient(client.transport, str(server.make_url("/v2")), client._token, client.timeout)

    async def may_write() -> None:
        asked[0] += 1

    writer.may_write = may_write
    try:
        yield proxy, writer, asked
    finally:
        await server.close()


async def test_an_initial_run_is_pipelined_full_size_requests_within_the_bound(
        sync_env: SyncEnv, pbx_config: tuple[str, ScimServer]) -> None:
    mode, _ = pbx_config
    made = generate_tenant(sync_env.graph.tenant, users=USERS, photo_fraction=0)
    async with watching(sync_env) as (proxy, writer, asked):
        proxy.hold_first_write()
        report = await sync_env.run(writer=writer)
    creates = len(made.members)
    assert report.result == "success" and report.counts == {"create": creates}
    assert set(await sync_env.pbx_users()) == set(made.members)
    assert proxy.overlapped  # the second request was sent while the PBX held the first
    assert proxy.most_in_flight == REQUESTS_IN_FLIGHT
    assert asked[0] == proxy.writes()  # the lease was asked before every write request
    if mode == "bulk":  # as many per request as announced: the request count the issue pins
        assert proxy.writes() <= math.ceil(creates / MAX_OPERATIONS) + 2
        assert proxy.writes() == math.ceil(creates / MAX_OPERATIONS)
    elif mode == "small payloads":  # each request under the announced size, and about as full as it allows
        assert max(proxy.sizes) <= 30000 and proxy.writes() <= math.ceil(sum(proxy.sizes) / 30000) + 2
    else:
        assert proxy.writes() == creates


async def test_creates_come_before_the_memberships_that_name_them_and_deletes_last(
        sync_env: SyncEnv, pbx_config: tuple[str, ScimServer]) -> None:
    made = generate_tenant(sync_env.graph.tenant, users=USERS, photo_fraction=0)
    members = made.members
    sync_env.graph.tenant.add_group(SALES, members=members[:5], displayName="Sales")
    sync_env.configure(groups=[SALES], groups_starting_extension_number="9000")
    async with watching(sync_env) as (proxy, writer, _):
        first = await sync_env.run(writer=writer)
        assert first.result == "success" and first.groups.counts == {"create": 1}
        assert proxy.ended_before_started("POST Users", "POST Groups")  # the group names users created this run
        users = await sync_env.pbx_users()
        assert {m["value"] for m in (await sync_env.pbx_groups())[SALES]["members"]} == {
            users[m]["id"] for m in members[:5]}
        for user in members[5:15]:
            sync_env.graph.tenant.change_user(user, displayName=f"Renamed {user[-4:]}")
        for user in members[15:25]:
            sync_env.graph.tenant.hard_delete_user(user)
        sync_env.graph.tenant.add_member(SALES, members[30])
        sync_env.graph.tenant.remove_member(SALES, members[0])
        proxy.spans.clear()
        second = await sync_env.run(writer=writer)
    assert second.result == "success" and second.counts == {"update": 10, "delete": 10}
    assert second.groups.counts == {"update": 1}
    assert proxy.ended_before_started("PATCH Users", "PATCH Groups")
    assert proxy.ended_before_started("PATCH Groups", "DELETE Users")  # deletes last
    assert set(await sync_env.pbx_users()) == set(members) - set(members[15:25])


async def test_a_full_bulk_request_waits_longer_for_its_answer_than_one_object(pbx: PbxEnv) -> None:
    single = pbx.client.timeout
    full = pbx.client.bulk_timeout(1000)  # two of them in flight: the second waits behind the first
    assert single.total and full.total and full.total == 5 * single.total
    assert single.sock_read and full.sock_read and full.sock_read == 5 * single.sock_read
    assert full.sock_connect == single.sock_connect  # reaching the PBX takes no longer
