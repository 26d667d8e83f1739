"""A fake Entra over HTTPS (throwaway CA from trustme) and a daemon using it."""

from __future__ import annotations

import io
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import structlog
import trustme
from aiohttp import web

from conftest import write_secret
from daemon.config import load_config
from daemon.logging import configure_logging
from daemon.service import Service
from daemon.tls import client_ssl_context
from sim.entra import certificate_pair
from sim.idp import FakeApp, FakeIdentityProvider
from sim.world import free_port

DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_DIRECTORY = "11111111-2222-4333-8444-555555555555"
DELEGATED_APP = "0b9d2a3c-5e6f-4a1b-8c7d-9e0f1a2b3c4d"
APPLICATION_APP = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
OWNER = "pbx-service@contoso.example"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


@dataclass
class AuthEnv:
    idp: FakeIdentityProvider
    idp_url: str
    service: Service
    base_url: str
    config_dir: Path
    ca_file: Path
    delegated_app: FakeApp
    log: io.StringIO
    pages: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def callback(self) -> str:
        return f"{self.base_url}/api/auth/callback/ms365"

    async def fetch(self, session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str, str]:
        """GET without following redirects; pages are kept for the secret scan."""
        self.urls.append(url)
        if url.startswith("https://"):
            kwargs.setdefault("ssl", client_ssl_context(self.ca_file))
        async with session.get(url, allow_redirects=False, **kwargs) as response:
            text = await response.text()
            self.pages.append(text)
            return response.status, text, response.headers.get("Location", "")

    async def continue_url(self, session: aiohttp.ClientSession) -> str:
        """Microsoft's authorize URL, from the start page of a fresh link."""
        assert self.service.auth is not None
        status, page, _ = await self.fetch(session, await self.service.auth.issue_start_link("contoso"))
        assert status == 200, page
        match = re.search(r"id='continue' href='([^']+)'", page)
        assert match, page
        return match.group(1).replace("&amp;", "&")

    async def sign_in(self, session: aiohttp.ClientSession, start_url: str, username: str = OWNER, action: str = "signin",
                      headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Start page -> Microsoft's form -> callback, like a browser; returns the callback's answer."""
        status, page, _ = await self.fetch(session, start_url, headers=headers)
        assert status == 200, page
        match = re.search(r"id='continue' href='([^']+)'", page)
        assert match, page
        authorize = match.group(1).replace("&amp;", "&")
        form_status, form_page, _ = await self.fetch(session, authorize)
        assert form_status == 200, form_page
        fields = dict(re.findall(r"<input type='hidden' name='([^']+)' value='([^']*)'>", form_page))
        fields = {k: v.replace("&amp;", "&").replace("&#x27;", "'") for k, v in fields.items()}
        fields.update(username=username, action=action)
        async with session.post(authorize.split("?")[0], data=fields, allow_redirects=False, ssl=client_ssl_context(self.ca_file)) as response:
            location = response.headers["Location"]
        return await self.fetch(session, location)


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def daemon_config(env_dir: Path, idp_url: str, ca_file: Path, port: int, extra_tenants: str = "") -> Path:
    write_secret(env_dir / "pbx-token")
    write_secret(env_dir / "admin-token", ADMIN_TOKEN)
    config = env_dir / "config.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
admin_token_file = "admin-token"

[state]
path = "state.db"

[log]
format = "json"

[[tenants]]
name = "contoso"
directory_id = "{DIRECTORY}"
application_id = "{DELEGATED_APP}"
authority_url = "{idp_url}"
ca_file = "{ca_file}"
[tenants.pbx]
scim_url = "http://127.0.0.1:9/scim/v2"
token_file = "pbx-token"
[tenants.users]
enabled = true
starting_extension_number = "1001"
{extra_tenants}
""")
    return config


async def verifiers(env: AuthEnv) -> set[str]:
    """The PKCE verifiers of every attempt, read from the state database."""
    found = set()
    async with env.service.store.db.conn.execute("SELECT data FROM auth_attempts WHERE purpose = 'flow'") as cursor:
        for (data,) in await cursor.fetchall():
            assert env.service.auth is not None  # attempts are sealed at rest: open them as the daemon does
            flow = json.loads(env.service.auth.sealer.open(bytes(data)))["flow"]
            if "code_verifier" in flow:
                found.add(flow["code_verifier"])
    return found


async def assert_no_secrets(env: AuthEnv) -> None:
    """After every test: no token, code, secret or verifier in a log line or page."""
    idp = env.idp
    secrets = set(idp.issued_access_tokens) | set(idp._grants) | set(idp._codes) | idp.redeemed_refresh_tokens
    secrets |= await verifiers(env) | {ADMIN_TOKEN}
    text = env.log.getvalue() + "\n".join(env.pages)
    assert [s for s in secrets if s in text] == []


async def serve_idp(tmp_path: Path) -> tuple[FakeIdentityProvider, web.AppRunner, trustme.CA, Path]:
    """The fake Entra over HTTPS with a throwaway CA (written to ``idp-ca.pem``), its owner account added."""
    ca = trustme.CA()
    ca_file = tmp_path / "idp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    idp = FakeIdentityProvider()
    runner = web.AppRunner(idp.app())
    await runner.setup()
    idp_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", idp_port, ssl_context=server_context).start()
    idp.base_url = f"https://127.0.0.1:{idp_port}"
    idp.add_user(OWNER, name="PBX Service")
    return idp, runner, ca, ca_file


@asynccontextmanager
async def started_auth_env(tmp_path: Path, more_tenants: str = "") -> AsyncIterator[AuthEnv]:
    """The daemon with tenants contoso (delegated), fabrikam (application, certificate) and
    ``more_tenants`` (TOML, where ``{idp_url}`` and ``{ca_file}`` name the fake Entra)."""
    idp, runner, _, ca_file = await serve_idp(tmp_path)

    port = free_port()
    cert_pem, key_pem = certificate_pair()
    (tmp_path / "app.crt").write_bytes(cert_pem)
    write_secret(tmp_path / "app.key", key_pem.decode())
    application_tenant = f"""
[[tenants]]
name = "fabrikam"
directory_id = "{OTHER_DIRECTORY}"
application_id = "{APPLICATION_APP}"
auth_mode = "application"
client_certificate_file = "app.crt"
client_private_key_file = "app.key"
authority_url = "{idp.base_url}"
ca_file = "{ca_file}"
[tenants.pbx]
scim_url = "http://127.0.0.1:9/scim/v2"
token_file = "pbx-token"
"""
    config_path = daemon_config(tmp_path, idp.base_url, ca_file, port, application_tenant + more_tenants.replace("{idp_url}", idp.base_url).replace("{ca_file}", str(ca_file)))
    callback = f"http://127.0.0.1:{port}/api/auth/callback/ms365"
    delegated = idp.register_app(DIRECTORY, FakeApp(DELEGATED_APP, public_redirect_uris={callback}))
    idp.register_app(OTHER_DIRECTORY, FakeApp(APPLICATION_APP, web_redirect_uris={callback}, certificate_pem=cert_pem))

    log = io.StringIO()
    configure_logging("debug", "json", stream=log)
    service = Service(load_config(config_path), environ={}, schedule=False)
    await service.start()
    env = AuthEnv(idp, idp.base_url, service, f"http://127.0.0.1:{port}", tmp_path, ca_file, delegated, log)
    try:
        yield env
        await assert_no_secrets(env)
    finally:
        await service.stop()
        await runner.cleanup()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


@pytest.fixture
async def auth_env(tmp_path: Path) -> AsyncIterator[AuthEnv]:
    async with started_auth_env(tmp_path) as env:
        yield env
