"""A whole fake world on loopback for the demo: a fake Entra over HTTPS (a
throwaway CA from trustme), the Graph simulator with a seeded tenant, and
scim2-server as the PBX, plus a daemon configuration pointing at them
(application mode, client secret)."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from daemon.clock import SystemClock
from sim.app import Simulator
from sim.generator import GeneratedTenant, generate_tenant
from sim.idp import FakeApp, FakeIdentityProvider
from sim.pbx import ScimServer
from sim.store import SimTenant

DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
APP_ID = "0b9d2a3c-5e6f-4a1b-8c7d-9e0f1a2b3c4d"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _secret_file(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return path


@dataclass
class FakeWorld:
    """``users`` generated users (0: the caller fills the tenant); ``scim`` an
    already running PBX to use (else one is started); ``pbx_url`` replaces the
    PBX's URL in the daemon's config (e.g. a proxy in front of it)."""

    workdir: Path
    users: int = 200
    seed: int = 1
    scim: ScimServer | None = None
    pbx_tenant: str = "contoso"
    pbx_url: str | None = None
    sync_photo: bool = True
    photo_bytes: int = 64  # size of each generated photo
    tenant_settings: str = ""  # more TOML lines of the [[tenants]] table (before its sub-tables)
    tenant_sections: str = ""  # more sub-tables of it, e.g. [tenants.personal_contacts]
    tenant: SimTenant = field(default_factory=lambda: SimTenant(SystemClock()))
    made: GeneratedTenant | None = None
    idp: FakeIdentityProvider = field(default_factory=FakeIdentityProvider)
    sim: Simulator | None = None
    pbx: ScimServer | None = None
    config_path: Path | None = None
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _runners: list[web.AppRunner] = field(default_factory=list)
    _owns_pbx: bool = False

    async def start(self) -> FakeWorld:
        try:
            import trustme
        except ModuleNotFoundError as err:  # the demo extra is not installed
            raise RuntimeError("the demo needs the demo extra (trustme, scim2-server): from a checkout, make demo; "
                               "or pip install '.[demo]' there, or the wheel with [demo]") from err
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = trustme.CA()
        ca_file = self.workdir / "fake-entra-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)

        client_secret = secrets.token_urlsafe(24)
        self.idp.register_app(DIRECTORY, FakeApp(APP_ID, client_secret=client_secret))
        self.made = generate_tenant(self.tenant, users=self.users, seed=self.seed, photo_fraction=0.3,
                                    photo_bytes=self.photo_bytes)
        owns_pbx = self.scim is None
        self.sim = Simulator(self.tenant, accepted_tokens=self.idp.issued_access_tokens)
        idp_port = await self._serve(self.idp.app(), server_context)
        graph_port = await self._serve(self.sim.app(), None)
        self.idp.base_url = f"https://127.0.0.1:{idp_port}"
        self.pbx = self.scim or ScimServer().start()
        self._owns_pbx = owns_pbx

        _secret_file(self.workdir / "client-secret", client_secret)
        _secret_file(self.workdir / "pbx-token", self.pbx.token)
        _secret_file(self.workdir / "admin-token", self.admin_token)
        self.config_path = self.workdir / "config.toml"
        self.config_path.write_text(f"""# Written by m365sync demo: the daemon against a fake world on this machine.
[server]
listen = "127.0.0.1:{free_port()}"
admin_token_file = "admin-token"

[state]
path = "state.db"

[log]
level = "warning"
format = "console"


[[tenants]]
name = "contoso"
directory_id = "{DIRECTORY}"
application_id = "{APP_ID}"
auth_mode = "application"
client_secret_file = "client-secret"
authority_url = "{self.idp.base_url}"
graph_url = "http://127.0.0.1:{graph_port}"
ca_file = "{ca_file}"
sync_time = "0 */6 * * *"
{self.tenant_settings}
[tenants.pbx]
scim_url = "{self.pbx_url or self.pbx.url(self.pbx_tenant)}"
token_file = "pbx-token"

[tenants.users]
enabled = true
sync_photo = {"true" if self.sync_photo else "false"}
starting_extension_number = "1001"
{self.tenant_sections}""")
        return self

    async def _serve(self, app: web.Application, context: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        self._runners.append(runner)
        return port

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self.pbx is not None and self._owns_pbx:
            self.pbx.stop()
