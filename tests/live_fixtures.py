"""The real `m365sync` process against the whole fake world on loopback:
the Graph simulator, a fake Entra over HTTPS (application mode, client
secret), and scim2-server behind a proxy that counts writes and can SIGKILL
the daemon right after its k-th PBX write."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from auth_fixtures import free_port
from conftest import write_secret
from daemon.clock import SystemClock
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import PBX_USER
from daemon.retry import Transport
from sim.app import Simulator
from sim.idp import FakeApp, FakeIdentityProvider
from sim.pbx import ScimServer
from sim.store import SimTenant

DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
APP_ID = "0b9d2a3c-5e6f-4a1b-8c7d-9e0f1a2b3c4d"
SECRET = "app-secret-value-for-tests"
ADMIN_TOKEN = "live-admin-token-0123456789"
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
NO_BULK = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
    "patch": {"supported": True}, "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
    "filter": {"supported": True, "maxResults": 200}, "changePassword": {"supported": False},
    "sort": {"supported": False}, "etag": {"supported": True},
}
_pbx_tenants = itertools.count(1)


@pytest.fixture(scope="session")
def scim_server_one_by_one() -> Iterator[ScimServer]:
    """A PBX without /Bulk, so that every object is its own write."""
    with ScimServer(service_provider_config=NO_BULK) as server:
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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.target + request.path_qs.split("/v2", 1)[1], data=body, headers=headers) as answer:
                payload = await answer.read()
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


@pytest.fixture
async def live_env(tmp_path: Path, scim_server_one_by_one: ScimServer) -> AsyncIterator[LiveEnv]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    idp = FakeIdentityProvider()
    idp.register_app(DIRECTORY, FakeApp(APP_ID, client_secret=SECRET))
    tenant = SimTenant(SystemClock())
    sim = Simulator(tenant, accepted_tokens=idp.issued_access_tokens)
    pbx_tenant = f"live{next(_pbx_tenants)}"
    proxy = KillProxy(scim_server_one_by_one.url(pbx_tenant))

    runners = []
    ports = {}
    for name, app, context in (("idp", idp.app(), server_context), ("graph", sim.app(), None), ("pbx", None, None)):
        if app is None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        runners.append(runner)
        ports[name] = port
    idp.base_url = f"https://127.0.0.1:{ports['idp']}"
    proxy_url = f"http://127.0.0.1:{ports['pbx']}/v2"

    write_secret(tmp_path / "pbx-token", scim_server_one_by_one.token)
    write_secret(tmp_path / "client-secret", SECRET)
    write_secret(tmp_path / "admin-token", ADMIN_TOKEN)
    config = tmp_path / "config.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{free_port()}"
admin_token_file = "admin-token"

[state]
path = "state.db"

[log]
level = "info"
format = "json"

[[tenants]]
name = "contoso"
directory_id = "{DIRECTORY}"
application_id = "{APP_ID}"
auth_mode = "application"
client_secret_file = "client-secret"
authority_url = "{idp.base_url}"
graph_url = "http://127.0.0.1:{ports['graph']}"
ca_file = "{ca_file}"

[tenants.pbx]
scim_url = "{proxy_url}"
token_file = "pbx-token"

[tenants.users]
enabled = true
starting_extension_number = "1001"
""")
    env = LiveEnv(tmp_path, sim, tenant, idp, scim_server_one_by_one, proxy, config, pbx_tenant, proxy_url)
    try:
        yield env
    finally:
        for runner in runners:
            await runner.cleanup()
