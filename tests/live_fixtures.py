"""The real `m365sync` process against the whole fake world on loopback:
the Graph simulator, a fake Entra over HTTPS (application mode, client
secret), and scim2-server behind a proxy that counts writes and can SIGKILL
the daemon right after its k-th PBX write."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from conftest import write_secret
from daemon.clock import SystemClock
from daemon.config import load_config
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import PBX_USER
from daemon.retry import Transport
from daemon.service import Service
from sim.app import Simulator
from sim.idp import FakeIdentityProvider
from sim.pbx import ScimServer
from sim.store import SimTenant
from sim.world import FakeWorld, free_port

ADMIN_TOKEN = "live-admin-token-0123456789"
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
NO_BULK = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
    "patch": {"supported": True}, "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
    "filter": {"supported": True, "maxResults": 200}, "changePassword": {"supported": False},
    "sort": {"supported": False}, "etag": {"supported": True},
}
_pbx_tenants = itertools.count(1)


SMALL_BULK = {**NO_BULK, "bulk": {"supported": True, "maxOperations": 2, "maxPayloadSize": 1048576}}


FULL_BULK_OPERATIONS = 25
FULL_BULK = {**NO_BULK, "bulk": {"supported": True, "maxOperations": FULL_BULK_OPERATIONS, "maxPayloadSize": 1048576}}


@pytest.fixture(scope="session")
def scim_server_full_bulk() -> Iterator[ScimServer]:
    """A PBX with /Bulk of 25 operations: an initial run of 200 users is a few full-size, pipelined requests."""
    with ScimServer(service_provider_config=FULL_BULK) as server:
        yield server


@pytest.fixture(scope="session")
def scim_server_one_by_one() -> Iterator[ScimServer]:
    """A PBX without /Bulk, so that every object is its own write."""
    with ScimServer(service_provider_config=NO_BULK) as server:
        yield server


@pytest.fixture(scope="session")
def scim_server_small_bulk() -> Iterator[ScimServer]:
    """A PBX with /Bulk of at most 2 operations, so that a run has many bulk writes to be killed after."""
    with ScimServer(service_provider_config=SMALL_BULK) as server:
        yield server


class KillProxy:
    """Forwards to the PBX; after forwarding the k-th write, SIGKILLs the daemon
    before it can read the answer (the write is applied, never recorded)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.writes = 0
        self.kill_after: int | None = None
        self.pid: int | None = None
        self.killed = False
        self.rewrite: Callable[[str, str, bytes], bytes] | None = None  # (method, path, body) -> body sent back
        self.refuse_writes_after: int | None = None  # then writes get 503 (Retry-After: 0), not forwarded
        # Writes get a SCIM 400 whose detail quotes the request's Authorization header and token, as a
        # PBX debugging its own parser may; issue 20 found that detail in the log, the runs API and the state.
        self.echo_authorization = False
        self.echoed: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method in WRITE_METHODS and self.echo_authorization:
            header = request.headers.get("Authorization", "")
            self.echoed.append(header)
            detail = f"cannot parse the request (headers: Authorization: {header}; token {header.partition(' ')[2]})"
            return web.json_response({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400",
                                      "scimType": "invalidSyntax", "detail": detail}, status=400)
        if request.method in WRITE_METHODS and self.refuse_writes_after is not None \
                and self.writes >= self.refuse_writes_after:
            return web.Response(status=503, headers={"Retry-After": "0"})
        # Host passes through, as a reverse proxy before a PBX must (its /Bulk locations name the proxy)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.target + request.path_qs.split("/v2", 1)[1], data=body, headers=headers) as answer:
                payload = await answer.read()
                if self.rewrite is not None:
                    payload = self.rewrite(request.method, request.path, payload)
                response = web.Response(status=answer.status, body=payload,
                                        headers={k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "etag", "location")})
        if request.method in WRITE_METHODS:
            self.writes += 1
            if self.kill_after is not None and self.writes == self.kill_after and self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
                await asyncio.sleep(0.5)  # let the kill land; this answer is never read
        return response


@dataclass
class LiveEnv:
    tmp_path: Path
    sim: Simulator
    tenant: SimTenant
    idp: FakeIdentityProvider
    scim: ScimServer
    proxy: KillProxy
    config: Path
    pbx_tenant: str
    proxy_url: str
    outputs: list[str] = field(default_factory=list)

    async def m365sync(self, *args: str, kill_after: int | None = None) -> tuple[int, str, str]:
        """Run the CLI as a real process; with kill_after, SIGKILL it after that write."""
        self.proxy.kill_after = kill_after
        self.proxy.killed = False
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.cli", *args, "--config", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.proxy.pid = process.pid
        out, err = await asyncio.wait_for(process.communicate(), timeout=300)
        self.outputs.append(out.decode() + err.decode())
        return process.returncode or 0, out.decode(), err.decode()

    async def sync(self, kill_after: int | None = None) -> tuple[int, str, str]:
        return await self.m365sync("sync", "--once", kill_after=kill_after)

    async def pbx_client(self, session: aiohttp.ClientSession) -> PbxClient:
        """A client of the PBX tenant, bypassing the kill proxy."""
        return PbxClient(Transport(session, "check", Metrics(), clock=SystemClock()), self.scim.url(self.pbx_tenant), self.scim.token)

    async def pbx_users(self) -> dict[str, dict[str, object]]:
        """The PBX's users by externalId, checking there is no duplicate of either key."""
        async with aiohttp.ClientSession() as session:
            client = await self.pbx_client(session)
            users: dict[str, dict[str, object]] = {}
            numbers: list[str] = []
            async for obj in client.iter_objects("User"):
                assert obj.external_id and obj.external_id not in users, f"duplicate externalId {obj.external_id}"
                users[obj.external_id] = dict(obj.data)
                numbers.append(str(dict(obj.data)[PBX_USER]["extensionNumber"]))  # type: ignore[index]
        assert len(numbers) == len(set(numbers)), "duplicate extension numbers"
        return users


@asynccontextmanager
async def started_live_env(tmp_path: Path, scim: ScimServer, tenant_settings: str = "",
                           tenant_sections: str = "", state_url: str | None = None) -> AsyncIterator[LiveEnv]:
    """The fake world with the PBX behind a kill proxy, and the daemon's config written
    (its state in ``state_url``, a PostgreSQL database, when given; else a SQLite file)."""
    pbx_tenant = f"live{next(_pbx_tenants)}"
    proxy = KillProxy(scim.url(pbx_tenant))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proxy_url = f"http://127.0.0.1:{port}/v2"
    world = await FakeWorld(tmp_path, users=0, scim=scim, pbx_tenant=pbx_tenant, pbx_url=proxy_url, sync_photo=False,
                            tenant_settings=tenant_settings, tenant_sections=tenant_sections).start()
    assert world.sim is not None and world.config_path is not None
    write_secret(tmp_path / "admin-token", ADMIN_TOKEN)
    if state_url is not None:
        write_secret(tmp_path / "state-key", "a-key-of-the-live-tests-shared-state-0123456789")
        text = world.config_path.read_text()
        assert 'path = "state.db"' in text
        world.config_path.write_text(text.replace(
            'path = "state.db"', f'url = "{state_url}"\nencryption_key_file = "state-key"'))
    env = LiveEnv(tmp_path, world.sim, world.tenant, world.idp, scim, proxy, world.config_path, pbx_tenant, proxy_url)
    try:
        yield env
    finally:
        await world.stop()
        await runner.cleanup()


@pytest.fixture
async def live_env(tmp_path: Path, scim_server_one_by_one: ScimServer) -> AsyncIterator[LiveEnv]:
    async with started_live_env(tmp_path, scim_server_one_by_one) as env:
        yield env


def state_url_of(request: pytest.FixtureRequest, backend: str) -> str | None:
    """A new PostgreSQL database's URL for ``postgresql``; None (a SQLite file) for ``sqlite``."""
    return str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None


@asynccontextmanager
async def scheduled_service(env: LiveEnv) -> AsyncIterator[Service]:
    """The daemon on the live world, scheduling, once its start-up run is done."""
    service = Service(load_config(env.config), environ={})
    await service.start()
    schedule = service.supervisor.schedules["contoso"]
    startup = schedule.current or schedule.queued
    assert startup is not None
    await schedule.wait(startup.run_id)
    try:
        yield service
    finally:
        await service.stop()
