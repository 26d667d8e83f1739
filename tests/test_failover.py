"""Two real daemon processes on one PostgreSQL, 20 tenants, the Graph
simulator and scim2-server behind a recording proxy per daemon: one daemon
is SIGKILLed in the middle of its runs (or its lease session is cut); the other takes its tenants over
within one lease interval, no tenant is ever written by both daemons at
once, and every PBX ends with exactly the users it must have. The PBX writes
one object per request, or takes /Bulk (two requests in flight either way)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from conftest import HANG_GUARD, until, write_secret
from daemon.clock import SystemClock
from daemon.leases import rendezvous_owner
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import PBX_USER
from daemon.retry import Transport
from sim.pbx import ScimServer
from sim.world import FakeWorld, free_port
from state.open import open_database

TENANTS = [f"t{i:02d}" for i in range(20)]
USERS = 24
LEASE_SECONDS = 5
ADMIN = "failover-admin-token-0123456789"
WRITES = ("POST", "PATCH", "PUT", "DELETE")


@dataclass
class Write:
    tenant: str
    daemon: str
    started: float
    ended: float
    what: str = ""  # method, path and status, for a failure's message


@dataclass
class Recorder:
    """The PBX side: every write, by tenant and by the daemon that sent it (one proxy port per daemon)."""

    scim: ScimServer
    prefix: str
    writes: list[Write] = field(default_factory=list)
    after: dict[str, tuple[int, Callable[[], Awaitable[None]]]] = field(default_factory=dict)  # daemon -> (k, action)
    requests: Counter[str] = field(default_factory=Counter)  # write requests per daemon (the k of ``after``)

    def handler(self, daemon: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            tenant, rest = request.match_info["tenant"], request.match_info["rest"]
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            started = time.monotonic()
            async with aiohttp.ClientSession() as session, session.request(
                    request.method, f"{self.scim.url(self.prefix + tenant)}/{rest}", params=request.query, data=body,
                    headers=headers) as answer:
                payload = await answer.read()
                response = web.Response(status=answer.status, body=payload, headers={
                    k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "etag", "location")})
            if request.method in WRITES:
                ended = time.monotonic()
                self.writes += [Write(tenant, daemon, started, ended, what)
                                for what in written(request.method, rest, answer.status, body, payload)]
                self.requests[daemon] += 1
                count, action = self.after.get(daemon, (0, None))
                if action is not None and self.requests[daemon] == count:
                    await action()  # before the daemon reads this answer
            return response

        return handle


def written(method: str, rest: str, status: int, body: bytes, answer: bytes) -> list[str]:
    """``POST /Users 201``: each write of a request, the operations of a /Bulk one by one with their results."""
    if rest != "Bulk" or status != 200:
        return [f"{method} /{rest} {status}"]
    operations, results = json.loads(body)["Operations"], json.loads(answer)["Operations"]
    assert len(results) == len(operations)  # scim2-server answers every operation, in order
    return [f"{op['method']} {op['path']} {result['status']}" for op, result in zip(operations, results, strict=True)]


def config_text(world_config: str, *, port: int, proxy_port: int, pg_url: str, instance: str) -> str:
    def value(key: str) -> str:
        match = re.search(rf'^{key} = "([^"]*)"', world_config, re.M)
        assert match, key
        return match.group(1)

    tenants = "".join(f"""
[[tenants]]
name = "{name}"
directory_id = "{value('directory_id')}"
application_id = "{value('application_id')}"
auth_mode = "application"
client_secret_file = "client-secret"
authority_url = "{value('authority_url')}"
graph_url = "{value('graph_url')}"
ca_file = "{value('ca_file')}"
sync_time = "0 0 1 1 *"
[tenants.pbx]
scim_url = "http://127.0.0.1:{proxy_port}/{name}/v2"
token_file = "pbx-token"
[tenants.users]
enabled = true
sync_photo = false
starting_extension_number = "1001"
""" for name in TENANTS)
    return f"""
[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin-token"
[state]
url = "{pg_url}"
instance_name = "{instance}"
lease_seconds = {LEASE_SECONDS}
encryption_key_file = "state-key"
[log]
level = "info"
format = "json"
{tenants}"""


@dataclass
class Daemon:
    name: str
    port: int
    process: asyncio.subprocess.Process
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def api(session: aiohttp.ClientSession, daemon: Daemon, method: str, path: str) -> Any:
    async with session.request(method, daemon.url(path), headers={"Authorization": f"Bearer {ADMIN}"}) as answer:
        return await answer.json()


async def owners(session: aiohttp.ClientSession, daemon: Daemon) -> dict[str, str | None]:
    body = await api(session, daemon, "GET", "/api/status")
    return {t["tenant"]: t["owner"] for t in body["tenants"]}


@asynccontextmanager
async def two_daemons(tmp_path: Path, scim: ScimServer, pg_url: str) -> AsyncIterator[tuple[FakeWorld, Recorder,
                                                                                             list[Daemon]]]:
    world = await FakeWorld(tmp_path / "world", users=0, scim=scim, sync_photo=False).start()
    assert world.config_path is not None
    recorder = Recorder(scim, prefix=f"fo{os.getpid()}{tmp_path.name[-6:]}")
    runners, daemons = [], []
    try:
        for name in ("a", "b"):
            app = web.Application()
            app.router.add_route("*", "/{tenant}/v2/{rest:.*}", recorder.handler(name))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            proxy_port = free_port()
            await web.TCPSite(runner, "127.0.0.1", proxy_port).start()
            runners.append(runner)
            folder = tmp_path / name
            folder.mkdir()
            for secret in ("client-secret", "pbx-token"):
                write_secret(folder / secret, (world.workdir / secret).read_text().strip())
            write_secret(folder / "admin-token", ADMIN)
            write_secret(folder / "state-key", "a-key-every-daemon-of-this-state-shares-0123456")
            port = free_port()
            (folder / "config.toml").write_text(config_text(world.config_path.read_text(), port=port,
                                                            proxy_port=proxy_port, pg_url=pg_url, instance=name))
            log = folder / "daemon.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "daemon.cli", "run", "--config", str(folder / "config.toml"),
                    stdout=out, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            daemons.append(Daemon(name, port, process, log))
        yield world, recorder, daemons
    finally:
        for daemon in daemons:
            if daemon.process.returncode is None:
                daemon.process.terminate()
                await daemon.process.wait()
        for runner in runners:
            await runner.cleanup()
        await world.stop()


async def pbx_users(recorder: Recorder, tenant: str) -> dict[str, str]:
    """externalId -> extension of a PBX tenant, read around the proxies; duplicates fail."""
    async with aiohttp.ClientSession() as session:
        client = PbxClient(Transport(session, "check", Metrics(), clock=SystemClock()),
                           recorder.scim.url(recorder.prefix + tenant), recorder.scim.token)
        users: dict[str, str] = {}
        async for obj in client.iter_objects("User"):
            assert obj.external_id and obj.external_id not in users, f"{tenant}: duplicate {obj.external_id}"
            users[obj.external_id] = str(obj.data[PBX_USER]["extensionNumber"])
    assert len(set(users.values())) == len(users), f"{tenant}: duplicate extension numbers"
    return users


def logged(daemon: Daemon, event: str, since: float) -> list[tuple[float, dict[str, Any]]]:
    """(wall-clock time, entry) of ``daemon``'s log lines of ``event`` from ``since`` on: the daemon's own
    stamp of the moment, not when a test process starved by the same load got round to asking it."""
    found = []
    for line in daemon.log.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("event") == event and (at := datetime.fromisoformat(entry["timestamp"]).timestamp()) >= since:
            found.append((at, entry))
    return found


def leases_taken(daemon: Daemon, tenants: set[str], since: float) -> dict[str, float]:
    """When ``daemon``'s lease rounds first took each of ``tenants`` from ``since`` on (wall clock)."""
    taken: dict[str, float] = {}
    for at, entry in logged(daemon, "tenant lease taken", since):
        if entry["tenant"] in tenants:
            taken.setdefault(entry["tenant"], at)
    return taken


async def terminate_lease_session(pg_url: str, instance: str) -> None:
    admin = await asyncpg.connect(pg_url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend(backend_pid) FROM instances WHERE name = $1", instance)
    finally:
        await admin.close()


@pytest.mark.parametrize("pbx_mode", ["one-by-one", "bulk"])
@pytest.mark.parametrize("how", ["sigkill", "cut connection"])
async def test_a_lost_daemons_tenants_are_taken_over_without_a_duplicate_or_a_lost_change(
        tmp_path: Path, scim_server_one_by_one: ScimServer, scim_server_small_bulk: ScimServer, pg_url: str, how: str,
        pbx_mode: str) -> None:
    """``sigkill``: daemon a dies mid-run. ``cut connection``: PostgreSQL ends a's lease session
    (pg_terminate_backend) mid-run; a stops writing, b takes over, then a reconnects and gets its share back."""
    scim = scim_server_small_bulk if pbx_mode == "bulk" else scim_server_one_by_one
    per_tenant = USERS // 2 if pbx_mode == "bulk" else USERS  # write requests of one tenant's first run
    async with two_daemons(tmp_path, scim, pg_url) as (world, recorder, (a, b)):
        async with aiohttp.ClientSession() as session:
            async def settled() -> bool:
                try:
                    seen = await owners(session, a), await owners(session, b)
                except aiohttp.ClientError:
                    return False  # not listening yet
                return seen[0] == seen[1] == {t: rendezvous_owner(t, ["a", "b"]) for t in TENANTS}

            await until(settled, HANG_GUARD, "both daemons to own a share of the tenants")
            of_a = {t for t, owner in (await owners(session, a)).items() if owner == "a"}
            users = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1, USERS + 1)]
            for index, user in enumerate(users, start=1):
                world.tenant.add_user(user, displayName=f"User {index}", userPrincipalName=f"user{index:03d}@contoso.example",
                                      accountEnabled=True, userType="Member")

            lost_at: list[float] = []  # wall clock, as the daemons' log lines are stamped

            async def kill() -> None:
                lost_at.append(time.time())
                os.kill(a.process.pid, signal.SIGKILL)

            async def cut() -> None:
                lost_at.append(time.time())
                await terminate_lease_session(pg_url, "a")

            recorder.after["a"] = (2 * per_tenant + 5, kill if how == "sigkill" else cut)  # in the middle of a's third tenant
            for tenant in TENANTS:  # every request goes to b: a's tenants are forwarded to a
                answer = await api(session, b, "POST", f"/api/tenants/{tenant}/sync")
                assert answer["run_id"]

            async def b_took_one_over() -> bool:
                return any(w.daemon == "b" and w.tenant in of_a for w in recorder.writes)

            if how == "sigkill":
                await a.process.wait()
                assert a.process.returncode == -signal.SIGKILL

                async def b_owns_all() -> bool:
                    return set((await owners(session, b)).values()) == {"b"}

                await until(b_owns_all, HANG_GUARD, "b to take a's tenants")  # a hang guard: the bound is next
                # By b's next lease round (every LEASE_SECONDS / 3), as b's own log stamps it: the time a test
                # process starved by the same load took to ask b's status is no part of the takeover.
                taken = leases_taken(b, of_a, since=lost_at[0])
                assert taken.keys() == of_a and max(taken.values()) - lost_at[0] <= LEASE_SECONDS, taken
            else:
                await until(b_took_one_over, HANG_GUARD, "b to write one of a's tenants")
                taken = leases_taken(b, of_a, since=lost_at[0])
                assert taken and min(taken.values()) - lost_at[0] <= LEASE_SECONDS, taken  # b's next lease round,
                wrote = {w.tenant for w in recorder.writes if w.daemon == "b" and w.tenant in of_a}
                takeover_runs = {e["tenant"] for _, e in logged(b, "sync run started", lost_at[0]) if e["trigger"] == "takeover"}
                assert wrote <= takeover_runs  # then its run: the takeover started it, not a schedule or a retried request

            async def converged() -> bool:
                return [len(await pbx_users(recorder, t)) for t in TENANTS] == [USERS] * len(TENANTS)

            await until(converged, HANG_GUARD, "every PBX to have every user")
            assert await b_took_one_over()
            if how == "cut connection":
                await until(settled, HANG_GUARD, "a to reconnect and get its share back")
                db = await open_database(pg_url)
                try:
                    stopped = await db.fetchall("SELECT tenant FROM runs WHERE result = 'lease_lost'")
                finally:
                    await db.close()
                assert stopped and {r[0] for r in stopped} <= of_a  # a's runs stopped writing, as lease_lost
            written = len(recorder.writes)
            runs = [(t, (await api(session, b, "POST", f"/api/tenants/{t}/sync"))["run_id"]) for t in TENANTS]

            async def finished() -> bool:
                states = [await api(session, b, "GET", f"/api/tenants/{t}/runs/{r}") for t, r in runs]
                return all(s.get("state") == "finished" for s in states)

            await until(finished, HANG_GUARD, "the runs after convergence")
            for tenant, run_id in runs:
                result = await api(session, b, "GET", f"/api/tenants/{tenant}/runs/{run_id}")
                assert result["result"] == "success" and not result.get("counts"), (tenant, result)
        created = [w for w in recorder.writes if w.what.startswith("POST /Users 201")]
        others = [w for w in recorder.writes if w not in created]
        # One create per user, none doubled. A create on its way when a daemon stopped may land
        # after the new owner looked: the PBX answers 409 and it is adopted, not duplicated.
        assert len(created) == len(TENANTS) * USERS and all(w.what == "POST /Users 409" for w in others), others
        assert len(recorder.writes) == written  # the runs after convergence wrote nothing: no change was lost

    for tenant in TENANTS:
        assert set(await pbx_users(recorder, tenant)) == set(users)
        writes = sorted((w for w in recorder.writes if w.tenant == tenant), key=lambda w: w.started)
        by = [w.daemon for w in writes]  # in the order the requests reached the PBX
        assert by == sorted(by, key=lambda d: d != by[0]), f"{tenant}: a and b wrote in turns (at once): {by}"
    a_wrote = {w.tenant for w in recorder.writes if w.daemon == "a"}
    assert a_wrote and a_wrote <= of_a  # a wrote only its own tenants, and was stopped in the middle of them
