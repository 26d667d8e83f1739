"""Sync now, run progress and status, over HTTP, on a daemon that schedules."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from conftest import require_tool
from daemon.pbx.client import PbxOperation
from daemon.pbx.mapping import user_payload
from daemon.service import Service
from live_fixtures import ADMIN_TOKEN, LiveEnv, scheduled_service
from sim.generator import generate_tenant
from test_auth_browser import CHROMIUM_ARGS

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def daemon(live_env: LiveEnv) -> AsyncIterator[tuple[Service, str]]:
    generate_tenant(live_env.tenant, users=60, photo_fraction=0)
    async with scheduled_service(live_env) as service:
        yield service, f"http://127.0.0.1:{service.bound_port}"


async def sync_now(service: Service, base: str, session: aiohttp.ClientSession) -> str:
    async with session.post(f"{base}/api/tenants/contoso/sync", headers=ADMIN) as response:
        assert response.status == 202
        run_id = str((await response.json())["run_id"])
    await service.supervisor.schedules["contoso"].wait(run_id)
    return run_id


async def test_sync_now_needs_the_admin_token_and_shows_up_in_status(daemon: tuple[Service, str], live_env: LiveEnv) -> None:
    service, base = daemon
    runs_before = len(service.supervisor.schedules["contoso"].recent)
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Og=="}):
            async with session.post(f"{base}/api/tenants/contoso/sync", headers=headers) as response:
                assert response.status == 401
        assert len(service.supervisor.schedules["contoso"].recent) == runs_before and service.supervisor.schedules["contoso"].queued is None
        async with session.post(f"{base}/api/tenants/nope/sync", headers=ADMIN) as response:
            assert response.status == 404
        run_id = await sync_now(service, base, session)
        async with session.get(f"{base}/api/tenants/contoso/runs/{run_id}", headers=ADMIN) as response:
            run = await response.json()
        assert run["state"] == "finished" and run["result"] == "success"
        async with session.get(f"{base}/api/status", headers=ADMIN) as response:
            status = await response.json()
        tenant = status["tenants"][0]
        assert tenant["last_run"]["id"] == run_id and tenant["auth_state"] == "authorized"
        assert tenant["next_run"] is not None
        async with session.get(f"{base}/api/status") as response:
            assert response.status == 401
        async with session.get(f"{base}/metrics") as response:
            metrics = await response.text()
    assert 'm365sync_sync_runs_total{result="success",tenant="contoso"} 2.0' in metrics
    assert 'm365sync_synced_objects{kind="user",tenant="contoso"}' in metrics
    assert "m365sync_next_run_timestamp_seconds{tenant=\"contoso\"}" in metrics
    assert 'm365sync_objects_changed_total{action="create",kind="user",tenant="contoso"}' in metrics


async def test_status_cli_reads_the_database_while_the_daemon_runs(daemon: tuple[Service, str], live_env: LiveEnv) -> None:
    code, out, _ = await live_env.m365sync("status")
    assert code == 0
    assert "authorization: authorized as application" in out
    assert "last run:" in out and "success" in out and "next run: 20" in out


async def test_status_page_names_held_deprovisions_and_quarantined_objects(
    daemon: tuple[Service, str], live_env: LiveEnv, tmp_path: Path
) -> None:
    chromium = require_tool("chromium", "chromium")
    service, base = daemon
    taken = user_payload({"id": "by-hand", "userPrincipalName": "clash@contoso.example"}, extension_number="9999",
                         active=True, sign_in_as_administrator=False, sign_in_as_standard_user=False)
    async with aiohttp.ClientSession() as session:
        pbx = (await live_env.pbx_client(session))
        assert (await pbx.execute(PbxOperation("create", "User", "by-hand", payload=taken))).ok
    live_env.tenant.add_user("00000000-0000-4000-8000-00000000c1a5", displayName="Clash", userPrincipalName="clash@contoso.example",
                             accountEnabled=True, userType="Member")
    members = [u for u, r in live_env.tenant.users.records.items() if r.data.get("userType") == "Member" and r.data.get("accountEnabled")]
    for user in members[:25]:
        live_env.tenant.hard_delete_user(user)
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            await sync_now(service, base, session)
            # as if its backoff (an hour after one failure, doubling) had passed: it is tried again
            async with service.supervisor.sync_store.db.transaction() as conn:
                await conn.execute("UPDATE synced_objects SET retry_at = NULL")
        async with session.get(base + "/") as response:
            assert response.status == 401 and "Basic" in response.headers["WWW-Authenticate"]
    reports = await service.supervisor.status_reports()
    assert len(reports[0].held) == 25 and len(reports[0].quarantined) == 1
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(http_credentials={"username": "admin", "password": ADMIN_TOKEN})
            page = await context.new_page()
            response = await page.goto(base + "/")
            assert response is not None and response.status == 200
            held = await page.inner_text("#tenant-contoso .held")
            quarantined = await page.inner_text("#tenant-contoso .quarantined")
            await page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
        finally:
            await browser.close()
    assert held.startswith("25") and "m365sync approve --tenant contoso" in held
    deleted_upn = str(live_env.tenant.users.records[members[0]].data["userPrincipalName"])
    assert deleted_upn in held
    assert "clash@contoso.example" in quarantined and "linked to another directory object" in quarantined


async def test_sync_now_cli_calls_the_running_daemon(daemon: tuple[Service, str], live_env: LiveEnv) -> None:
    service, _ = daemon
    code, out, err = await live_env.m365sync("sync-now", "--tenant", "contoso", "--wait")
    assert code == 0, out + err
    assert "sync requested, run" in out and ": success; no changes" in out  # counts in words, not a dict
    assert "{" not in out


async def test_a_non_utf8_authorization_header_is_a_401_not_a_500(daemon: tuple[Service, str]) -> None:
    service, _ = daemon
    for path in (b"/api/status", b"/"):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.bound_port)
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\xc3(\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert status_line.split()[1] == b"401", status_line


async def test_sync_now_takes_the_bearer_token_only_and_refuses_other_sites(daemon: tuple[Service, str]) -> None:
    service, base = daemon
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()}
    runs_before = len(service.supervisor.schedules["contoso"].recent)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/status", headers=basic) as response:
            assert response.status == 200  # reading with the browser's login is fine
        async with session.post(f"{base}/api/tenants/contoso/sync", headers=basic) as response:
            assert response.status == 401  # a cached browser login cannot trigger a sync
        for header, value in (("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")):
            async with session.post(f"{base}/api/tenants/contoso/sync", headers={**ADMIN, header: value}) as response:
                assert response.status == 403
        assert len(service.supervisor.schedules["contoso"].recent) == runs_before and service.supervisor.schedules["contoso"].queued is None
        async with session.post(f"{base}/api/tenants/contoso/sync", headers={**ADMIN, "Origin": base}) as response:
            assert response.status == 202  # the daemon's own origin, with the bearer token
