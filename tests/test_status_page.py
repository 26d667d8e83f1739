"""The admins' status page in headless Chromium: four tenants in the states an
admin meets (healthy, PBX token missing, authorization needed, failed objects
and held deprovisions), each shown with its reason, its fix and its counts.

Screenshots go to the test's tmp directory; ``M365SYNC_SCREENSHOTS=docs`` writes
them to ``docs/`` instead (how the README's pictures are refreshed)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from conftest import require_tool
from daemon import status
from daemon.config import ServerConfig, TenantConfig
from daemon.health import TenantStatus
from daemon.metrics import Metrics
from daemon.scheduler import next_run_after
from daemon.server import PAGE_HEADERS, build_app
from daemon.status import TenantReport
from state.open import open_database
from state.pushed import Failed, Pushed
from state.store import Store
from state.sync_store import SyncStore
from test_auth_browser import CHROMIUM_ARGS

ADMIN_TOKEN = "status-page-admin-token"
ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = Path("/etc/m365sync/m365sync.toml")
TENANTS = ("contoso", "fabrikam", "northwind", "tailspin")
# fabrikam's PBX token file was never written; a production path, so the committed screenshot shows no test folder
MISSING_TOKEN = Path("/etc/m365sync/fabrikam-pbx-token")


class Clock:
    def __init__(self) -> None:
        self.now = 1_796_000_000.0  # 2026-11-30

    def __call__(self) -> float:
        return self.now


@dataclass
class PageConfig:
    """What ``status.collect`` reads of a configuration."""

    source: Path
    tenants: tuple[TenantConfig, ...]
    server: ServerConfig = field(default_factory=lambda: ServerConfig(public_url="https://pbx.example.com:8887"))


def tenant(tmp_path: Path, name: str, **overrides: Any) -> TenantConfig:
    raw: dict[str, Any] = {
        "name": name, "directory_id": "11111111-2222-3333-4444-555555555555",
        "application_id": "66666666-7777-8888-9999-000000000000", "timezone": "Europe/Berlin", "sync_time": "30 2 * * *",
        "pbx": {"scim_url": "https://pbx.example.com/scim/v2", "token_file": f"{name}-pbx-token"},
        "users": {"enabled": True, "starting_extension_number": "1001"}, "personal_contacts": {"enabled": True},
        **overrides,
    }
    return TenantConfig.model_validate(raw, context={"base_dir": tmp_path})


async def record_run(store: Store, clock: Clock, run_id: str, name: str, seconds: float, result: str,
                     counts: dict[str, dict[str, int]], failures: list[str] | None = None, error: str | None = None) -> None:
    await store.start_run(run_id, name, "schedule")
    clock.now += seconds
    await store.finish_run(run_id, result, {"counts": counts, "failures": failures or []}, error)
    clock.now += 3600 - seconds


async def push_users(sync_store: SyncStore, name: str, count: int) -> None:
    users = [{"id": f"{name}-u{i}", "userPrincipalName": f"user{i}@{name}.example", "displayName": f"User {i}"}
             for i in range(count)]
    await sync_store.merge_changes(name, "user", users)
    await sync_store.apply_bookkeeping(name, [Pushed("user", u["id"], f"pbx-{u['id']}", {}, "h", None, active=True)
                                              for u in users])


@dataclass
class Control:
    config: PageConfig
    store: Store
    sync_store: SyncStore
    clock: Clock

    async def status_reports(self) -> list[TenantReport]:
        next_runs = {t.name: next_run_after(t, self.clock()) for t in self.config.tenants}
        return await status.collect(self.config, self.store, self.sync_store, next_runs)  # type: ignore[arg-type]

    async def tenant_statuses(self) -> list[TenantStatus]:
        return []

    async def request(self, tenant: str, trigger: str = "sync-now") -> str | None:
        return None

    async def run_status(self, tenant: str, run_id: str) -> dict[str, Any] | None:
        return None


@pytest.fixture
async def page_base(tmp_path: Path) -> AsyncIterator[str]:
    clock = Clock()
    db = await open_database(tmp_path / "state.db")
    store, sync_store = Store(db, clock=clock), SyncStore(db, clock=clock)
    tenants = (tenant(tmp_path, "contoso", groups=["aaaaaaaa-0000-4000-8000-000000000001"]),
               tenant(tmp_path, "fabrikam", pbx={"scim_url": "https://pbx.example.com/scim/v2", "token_file": str(MISSING_TOKEN)}),
               tenant(tmp_path, "northwind", auth_mode="delegated"),
               tenant(tmp_path, "tailspin", national_cloud="USGOV", timezone="America/New_York"))
    assert not MISSING_TOKEN.exists()
    for name in TENANTS:
        await store.register_tenant(name, "d", "a")
        if name != "fabrikam":  # fabrikam's PBX token file was never written
            token = tmp_path / f"{name}-pbx-token"
            token.write_text("secret")
            token.chmod(0o600)
        if name == "northwind":
            await store.set_auth_state(name, "reauthorization_required",
                                       reason="AADSTS700082: the refresh token has expired due to inactivity")
        else:
            await store.set_auth_state(name, "authorized", owner="pbx-sync@" + name + ".example")
    await push_users(sync_store, "contoso", 42)
    for i, seconds in enumerate((14, 9, 11, 8, 31, 10, 9, 12, 8, 9, 10)):
        await record_run(store, clock, f"c{i}", "contoso", seconds, "success",
                         {"user": {"create": 42}} if i == 0 else ({"user": {"update": i}} if i % 3 == 0 else {}))
    await push_users(sync_store, "fabrikam", 7)
    await record_run(store, clock, "f0", "fabrikam", 5, "success", {"user": {"create": 7}})
    await record_run(store, clock, "n0", "northwind", 2, "reauthorization_required", {},
                     error="the refresh token has expired due to inactivity (AADSTS700082)")
    await push_users(sync_store, "tailspin", 30)
    for attempt in range(5):  # five failures in a row: quarantined
        await sync_store.apply_bookkeeping("tailspin", [Failed("user", "tailspin-u3", "PBX 409: extension 1004 is taken", "fp")])
    await sync_store.hold("tailspin", {f"tailspin-u{i}": ("user", "delete") for i in (10, 11, 12)})
    await record_run(store, clock, "t0", "tailspin", 20, "success", {"user": {"create": 30}})
    await record_run(store, clock, "t1", "tailspin", 7, "partial", {"user": {"failed": 1, "update": 2}},
                     failures=["user3@tailspin.example: PBX 409: extension 1004 is taken"])
    await record_run(store, clock, "t2", "tailspin", 6, "deprovisions_held", {"user": {"failed": 1}},
                     failures=["user3@tailspin.example: PBX 409: extension 1004 is taken"])
    config = PageConfig(CONFIG_FILE, tenants)
    app = build_app(Control(config, store, sync_store, clock), Metrics(), admin_token=ADMIN_TOKEN,
                    control=Control(config, store, sync_store, clock), instance="pbx-host:8790")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await db.close()


def screenshot_dir(tmp_path: Path) -> Path:
    """``docs/`` when asked for (M365SYNC_SCREENSHOTS=docs), else the test's own directory."""
    return ROOT / "docs" if os.environ.get("M365SYNC_SCREENSHOTS") == "docs" else tmp_path


async def test_the_status_page_says_per_tenant_what_is_wrong_and_the_fix(page_base: str, tmp_path: Path) -> None:
    chromium = require_tool("chromium", "chromium")
    async with aiohttp.ClientSession() as session:
        async with session.get(page_base + "/") as response:
            assert response.status == 401
        async with session.get(page_base + "/", headers={"Authorization": aiohttp.encode_basic_auth("admin", ADMIN_TOKEN)}) as response:
            assert response.status == 200
            for header, value in PAGE_HEADERS.items():
                assert response.headers[header] == value
            html = await response.text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # no external assets
    shots = screenshot_dir(tmp_path)
    texts: dict[str, str] = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(http_credentials={"username": "admin", "password": ADMIN_TOKEN},
                                                viewport={"width": 800, "height": 900})
            page = await context.new_page()
            response = await page.goto(page_base + "/")
            assert response is not None and response.status == 200
            for name in TENANTS:
                section = page.locator(f"#tenant-{name}")
                texts[name] = await section.inner_text()
                await section.screenshot(path=str(shots / f"status-{name}.png"))
            header = await page.inner_text("#daemon")
            authorize_href = await page.get_attribute("#tenant-contoso a.authorize", "href")
            bars = await page.locator("#tenant-contoso svg.history-chart rect").count()
            badges = {name: await page.eval_on_selector(f"#tenant-{name} .badge",
                                                        "b => getComputedStyle(b).backgroundColor") for name in TENANTS}
            colours = await page.eval_on_selector_all("#tenant-tailspin svg.history-chart rect",
                                                      "rs => rs.map(r => r.getAttribute('fill'))")
            await page.set_viewport_size({"width": 390, "height": 800})  # a phone: one column, no sideways scrolling
            await page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
            phone_width = await page.evaluate("document.documentElement.scrollWidth")
        finally:
            await browser.close()
    assert phone_width <= 390
    assert "pbx-host:8790" in header and "version" in header and "up 0 min" in header

    healthy = texts["contoso"]
    assert "Ready" in healthy and "Fix:" not in healthy
    assert "42 users, 0 groups, 0 contacts" in healthy and "users, groups, personal_contacts" in healthy
    assert "30 2 * * * (Europe/Berlin)" in healthy and "02:30 Europe/Berlin)" in healthy and "GLOBAL" in healthy
    assert "https://pbx.example.com:8887/api/auth/callback/ms365" in healthy
    assert authorize_href == "/api/auth/start/ms365?tenant=contoso"  # same origin: the Basic login goes with it
    assert bars == 10  # the last ten of eleven runs

    missing = texts["fabrikam"]
    assert "Not ready: secret_file_unusable" in missing
    assert "fabrikam-pbx-token does not exist yet" in missing
    assert f"install -m 640 -g m365sync /dev/stdin {MISSING_TOKEN}" in missing
    assert "authorized as pbx-sync@fabrikam.example" in missing and "7 users" in missing

    needs_auth = texts["northwind"]
    assert "Not ready: reauthorization_required" in needs_auth and "AADSTS700082" in needs_auth
    assert f"m365sync authorize --config {CONFIG_FILE} --tenant northwind" in needs_auth
    assert "Last success\nnever" in needs_auth and "the refresh token has expired due to inactivity" in needs_auth

    troubled = texts["tailspin"]
    assert "Ready, needs attention: 1 failed, 3 held, 1 quarantined" in troubled
    assert badges["tailspin"] == "rgb(239, 108, 0)" and badges["contoso"] == "rgb(46, 125, 50)"  # amber, green
    assert "Ready" in troubled and "USGOV" in troubled and "(America/New_York)" in troubled
    assert "Failed (last run)\n1" in troubled and "user3@tailspin.example: PBX 409: extension 1004 is taken" in troubled
    assert "Held deprovisions\n3" in troubled and "m365sync approve --tenant tailspin" in troubled
    assert "delete user10@tailspin.example" in troubled
    assert "Quarantined\n1" in troubled
    assert colours == ["#2e7d32", "#ef6c00", "#ef6c00"]  # oldest first: success, partial, held
