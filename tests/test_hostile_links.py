"""Hostile links (issue 20): a looping or endless ``@odata.nextLink``, a
nextLink or a stored deltaLink to another origin, a PBX ``/Bulk`` location
on another origin. Each is bounded or refused; a second loopback server
standing for the "foreign" host receives no request at all (so no token);
nothing is deleted or disabled on the PBX; the run is recorded with its
reason. Through the daemon's own run path, against the Graph simulator's
link faults (``sim.app.LinkFault``) and scim2-server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from daemon.config import load_config
from daemon.errors import GraphLinkRefused, GraphPagingRunaway
from daemon.graph.delta import BatchedRounds, RoundEvent, stored_links
from daemon.graph.paging import SLACK_PAGES
from daemon.scheduler import RunProgress
from daemon.service import Service
from daemon.sync.kinds import RUN_KINDS, SyncRequest
from graph_fixtures import GraphEnv
from live_fixtures import LiveEnv, started_live_env
from sim.app import LinkFault
from sim.pbx import ScimServer

USERS = [f"u{index}" for index in range(6)]
USERS_DELTA = r"^/users/delta$"


@dataclass
class ForeignServer:
    """A loopback server standing for another host: it records every request,
    and answers like a delta page that would lead a careless client on."""

    base_url: str = ""
    requests: list[tuple[str, str, bool]] = field(default_factory=list)  # method, path, had Authorization

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, "Authorization" in request.headers))
        return web.json_response({"value": [], "@odata.nextLink": f"{self.base_url}/v1.0/users/delta?again=1"})


@pytest.fixture
async def foreign() -> AsyncIterator[ForeignServer]:
    recorder = ForeignServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    recorder.base_url = str(server.make_url("")).rstrip("/")
    yield recorder
    await server.close()


@dataclass
class Daemon:
    live: LiveEnv
    service: Service
    runs: int = 0

    async def run(self) -> tuple[str, str, dict[str, object]]:
        """One run through the daemon's own path: (recorded result, recorded reason, summary)."""
        self.runs += 1
        run_id = f"run{self.runs}"
        request = SyncRequest(self.service.config.tenants[0].name, RUN_KINDS, "test")
        result = await self.service.supervisor.sync_now(request, run_id, RunProgress(run_id, "test"))
        row = await self.service.store.run(run_id)
        assert row is not None and row.finished_at is not None and row.result == result
        return result, row.error or "", row.summary

    async def active_pbx_users(self) -> set[str]:
        return {external for external, user in (await self.live.pbx_users()).items() if user.get("active") is not False}

    def pbx_deletes_and_disables(self) -> list[str]:
        """DELETEs and PATCHes the PBX received (a no-change run sends neither)."""
        return [f"{r.method} {r.path}" for r in self.live.scim.requests(self.live.pbx_tenant) if r.method in ("DELETE", "PATCH")]

    def users_delta_requests(self) -> int:
        return len(self.live.sim.requests(USERS_DELTA))


@pytest.fixture
async def daemon(tmp_path: Path, scim_server: ScimServer) -> AsyncIterator[Daemon]:
    """The daemon (scim2-server with /Bulk behind a proxy) after a first run that synced ``USERS``."""
    async with started_live_env(tmp_path, scim_server) as live:
        for user in USERS:
            live.tenant.add_user(user, displayName=f"User {user}", userPrincipalName=f"{user}@contoso.example",
                                 accountEnabled=True, userType="Member")
        service = Service(load_config(live.config), environ={}, schedule=False)
        await service.start()
        try:
            env = Daemon(live, service)
            result, error, _ = await env.run()
            assert result == "success", error
            assert await env.active_pbx_users() == set(USERS)
            yield env
        finally:
            await service.stop()


async def test_a_next_link_naming_its_own_page_ends_the_round_at_once(daemon: Daemon) -> None:
    daemon.live.tenant.hard_delete_user(USERS[0])  # an incremental round that finished would deprovision them
    daemon.live.sim.faults.links.append(LinkFault("loop", USERS_DELTA))
    before, writes = daemon.users_delta_requests(), daemon.live.proxy.writes
    result, error, _ = await daemon.run()
    assert result == "failed" and "already sent" in error, error
    assert daemon.users_delta_requests() - before <= 2  # the page, and at most the one repeat that gives it away
    assert daemon.live.proxy.writes == writes and daemon.pbx_deletes_and_disables() == []
    assert await daemon.active_pbx_users() == set(USERS)
    daemon.live.sim.faults.links.clear()  # Graph behaves again: the round is repeated and finishes
    result, error, _ = await daemon.run()
    assert result == "success", error
    assert await daemon.active_pbx_users() == set(USERS[1:])


async def test_endless_fresh_next_links_stop_where_the_tenant_size_ends(daemon: Daemon) -> None:
    daemon.live.sim.faults.links.append(LinkFault("endless", USERS_DELTA))
    before, writes = daemon.users_delta_requests(), daemon.live.proxy.writes
    result, error, _ = await daemon.run()
    assert result == "failed" and "more than" in error and "explain" in error, error
    pages = daemon.users_delta_requests() - before
    assert SLACK_PAGES <= pages <= SLACK_PAGES + 5, pages  # 50 + 2 x 6 stored users / 10 a page
    assert daemon.live.proxy.writes == writes and daemon.pbx_deletes_and_disables() == []


async def test_a_next_link_to_another_host_is_never_requested(daemon: Daemon, foreign: ForeignServer) -> None:
    daemon.live.tenant.change_user(USERS[1], jobTitle="Changed")
    daemon.live.sim.faults.links.append(LinkFault("foreign", USERS_DELTA, foreign_base=foreign.base_url))
    writes = daemon.live.proxy.writes
    result, error, _ = await daemon.run()
    assert result == "failed", error
    assert foreign.base_url.removeprefix("http://") in error and "not followed" in error, error
    assert foreign.requests == []
    assert daemon.live.proxy.writes == writes and daemon.pbx_deletes_and_disables() == []


async def test_a_stored_delta_link_to_another_host_starts_a_full_round(daemon: Daemon, foreign: ForeignServer) -> None:
    store = daemon.service.store
    stored = await store.delta_link("contoso", "users")
    assert stored is not None
    await store.save_delta_link("contoso", "users", re.sub(r"^http://[^/]+", foreign.base_url, stored))
    writes = daemon.live.proxy.writes
    result, error, summary = await daemon.run()
    assert result == "success", error
    assert summary["full_round"] is True  # treated like an expired delta state
    assert foreign.requests == []
    assert daemon.live.proxy.writes == writes and daemon.pbx_deletes_and_disables() == []
    assert (await store.delta_link("contoso", "users") or "").startswith(daemon.service.config.tenants[0].graph_url or "-")


async def test_a_bulk_location_on_another_host_ends_the_run(tmp_path: Path, scim_server: ScimServer,
                                                             foreign: ForeignServer) -> None:
    async with started_live_env(tmp_path, scim_server) as live:
        for user in USERS:
            live.tenant.add_user(user, displayName=f"User {user}", userPrincipalName=f"{user}@contoso.example",
                                 accountEnabled=True, userType="Member")

        def foreign_locations(method: str, path: str, body: bytes) -> bytes:
            if not path.endswith("/Bulk"):
                return body
            return re.sub(rb'("location":\s*")http://[^/"]+', rb"\g<1>" + foreign.base_url.encode(), body)

        live.proxy.rewrite = foreign_locations
        service = Service(load_config(live.config), environ={}, schedule=False)
        await service.start()
        try:
            env = Daemon(live, service)
            result, error, _ = await env.run()
            assert result == "failed" and "/Bulk location" in error, error
            assert foreign.base_url.removeprefix("http://") in error
            assert foreign.requests == []
            assert [r for r in live.scim.requests(live.pbx_tenant) if r.method == "DELETE"] == []
            live.proxy.rewrite = None  # the next run finds what the refused answer had created: no duplicate
            result, error, _ = await env.run()
            assert result == "success", error
            assert await env.active_pbx_users() == set(USERS)  # pbx_users fails on a duplicate
        finally:
            await service.stop()


# --- $batch rounds (contacts, calendars) ---


async def drain(rounds: BatchedRounds) -> list[RoundEvent]:
    return [event async for event in rounds]


def contacts_round(env: GraphEnv, link: str | None = None) -> BatchedRounds:
    env.tenant.add_user("m1", userPrincipalName="m1@contoso.example", accountEnabled=True)
    for index in range(3):
        env.tenant.put_contact("m1", f"c{index}", displayName=f"Contact {index}")
    rounds = BatchedRounds(env.client, {"Prefer": "odata.maxpagesize=1"})
    rounds.add("m1:contacts", link or "/users/m1/contactFolders/contacts/contacts/delta", "m1")
    return rounds


async def test_a_foreign_link_inside_batch_fails_only_that_round(graph_env: GraphEnv, foreign: ForeignServer) -> None:
    rounds = contacts_round(graph_env)
    graph_env.sim.faults.links.append(LinkFault("foreign", "/contacts/delta$", foreign_base=foreign.base_url))
    events = await drain(rounds)
    assert [e.kind for e in events] == ["failed"]
    assert isinstance(events[0].error, GraphLinkRefused)
    assert foreign.requests == []


async def test_a_looping_link_inside_batch_is_bounded(graph_env: GraphEnv) -> None:
    rounds = contacts_round(graph_env)
    graph_env.sim.faults.links.append(LinkFault("loop", "/contacts/delta$"))
    events = await drain(rounds)
    assert events[-1].kind == "failed" and isinstance(events[-1].error, GraphPagingRunaway)
    assert len(graph_env.sim.requests("/contacts/delta$", in_batch=True)) <= 2


async def test_stored_links_to_another_host_are_not_used(graph_env: GraphEnv, foreign: ForeignServer) -> None:
    own = f"{graph_env.base_url}/v1.0/users/m1/contactFolders/contacts/contacts/delta?$deltatoken=x"
    links = {"m1:contacts": own, "m2:contacts": own.replace(graph_env.base_url, foreign.base_url),
             "m3:contacts": own.replace("http://", "http://user@")}
    assert stored_links(graph_env.client, links, "contacts") == {"m1:contacts": own}
    rounds = BatchedRounds(graph_env.client)
    with pytest.raises(GraphLinkRefused):  # and a caller that forgot to check is stopped before any request
        rounds.add("m2:contacts", links["m2:contacts"], "m2")
    with pytest.raises(GraphLinkRefused):
        await graph_env.client.get(links["m2:contacts"])
    assert foreign.requests == []
