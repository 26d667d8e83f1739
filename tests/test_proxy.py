"""The nginx snippet (contrib/proxy/) in front of the daemon, in the real nginx
from Debian's package: only /api/auth/* (and /api/graph/*, Graph's notifications) is exposed on public_url, and the
admin's whole OAuth flow completes through it in headless Chromium."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from auth_fixtures import DELEGATED_APP, DIRECTORY, OWNER, daemon_config, serve_idp
from conftest import require_tool
from daemon.config import load_config
from daemon.service import Service
from sim.idp import FakeApp, FakeIdentityProvider
from sim.world import free_port
from test_auth_browser import CHROMIUM_ARGS

SNIPPET = Path(__file__).resolve().parent.parent / "contrib" / "proxy" / "nginx-m365sync.conf"


async def until_listening(port: int, process: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        assert process.poll() is None, "nginx exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            assert time.monotonic() < deadline, "nginx did not listen"
            await asyncio.sleep(0.05)  # an external process starting: a bounded readiness probe


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[Service, FakeIdentityProvider, str]]:
    nginx = require_tool("nginx", "nginx")
    idp, runner, ca, ca_file = await serve_idp(tmp_path)
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "proxy.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "proxy.crt"))

    daemon_port, proxy_port = free_port(), free_port()
    public_url = f"https://127.0.0.1:{proxy_port}"
    config = daemon_config(tmp_path, idp.base_url, ca_file, daemon_port)
    config.write_text(config.read_text().replace(f'public_url = "http://127.0.0.1:{daemon_port}"',
                                                 f'public_url = "{public_url}"'))
    idp.register_app(DIRECTORY, FakeApp(DELEGATED_APP, public_redirect_uris={f"{public_url}/api/auth/callback/ms365"}))
    (tmp_path / "m365sync.conf").write_text(SNIPPET.read_text().replace("127.0.0.1:8790", f"127.0.0.1:{daemon_port}"))
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (tmp_path / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {temp['body']}; proxy_temp_path {temp['proxy']}; fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']}; scgi_temp_path {temp['scgi']};
    server {{
        listen 127.0.0.1:{proxy_port} ssl;
        ssl_certificate {tmp_path}/proxy.crt;
        ssl_certificate_key {tmp_path}/proxy.key;
        include {tmp_path}/m365sync.conf;
        location / {{ return 404; }}
    }}
}}
""")
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"])
    service = Service(load_config(config), environ={}, schedule=False)
    await service.start()
    try:
        await until_listening(proxy_port, process)
        yield service, idp, public_url
    finally:
        await service.stop()
        process.terminate()
        process.wait(timeout=10)
        await runner.cleanup()
        shutil.rmtree(tmp_path / "proxy", ignore_errors=True)


async def test_only_the_oauth_pages_are_exposed_and_the_flow_completes(
        proxied: tuple[Service, FakeIdentityProvider, str], tmp_path: Path) -> None:
    service, idp, public_url = proxied
    chromium = require_tool("chromium", "chromium")
    trust = ssl.create_default_context(cafile=str(tmp_path / "idp-ca.pem"))  # the test's CA signed the proxy's cert
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/metrics", "/api/status", "/readyz"):
            async with session.get(public_url + path, ssl=trust) as response:
                assert response.status == 404, path  # the status page and the admin API stay on loopback
    assert service.auth is not None
    link = await service.auth.issue_start_link("contoso")
    assert link.startswith(f"{public_url}/api/auth/start/ms365")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = await browser.new_context(ignore_https_errors=True)  # the test's throwaway CA
        page = await context.new_page()
        try:
            await page.goto(link)
            assert f"{public_url}/api/auth/callback/ms365" in await page.inner_text(".redirect-uri")
            await page.click("#continue")
            await page.wait_for_selector("#username")
            await page.fill("#username", OWNER)
            await page.click("#signin")
            await page.wait_for_selector("#owner")
            assert page.url.startswith(f"{public_url}/api/auth/callback/ms365")
            assert await page.inner_text("#owner") == OWNER
            await page.screenshot(path=str(tmp_path / "through-nginx.png"))
        finally:
            await browser.close()
    row = await service.store.tenant("contoso")
    assert row is not None and row.auth_state == "authorized"
    log = (tmp_path / "access.log").read_text()
    assert "GET /api/auth/start/ms365" in log and "GET /api/auth/callback/ms365" in log


async def test_graph_reaches_the_notification_endpoint_through_the_proxy_over_https(
        proxied: tuple[Service, FakeIdentityProvider, str], tmp_path: Path) -> None:
    """The validation handshake Graph sends to {public_url}/api/graph/..., answered through nginx over TLS."""
    _, _, public_url = proxied
    trust = ssl.create_default_context(cafile=str(tmp_path / "idp-ca.pem"))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{public_url}/api/graph/notifications/contoso?validationToken=Validation%3A%20ok%2B1",
                                ssl=trust) as answer:
            assert (answer.status, answer.content_type, await answer.text()) == (200, "text/plain", "Validation: ok+1")
        async with session.post(f"{public_url}/api/graph/notifications/contoso", data=b"x" * 70_000,
                                ssl=trust) as answer:
            assert answer.status == 413  # the body limit holds at the proxy as at the daemon
    assert "POST /api/graph/notifications/contoso" in (tmp_path / "access.log").read_text()
