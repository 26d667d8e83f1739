"""The admin's browser flow in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import async_playwright

from auth_fixtures import OWNER, AuthEnv
from conftest import require_tool

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


async def test_start_sign_in_callback_success_then_tampered_state(auth_env: AuthEnv, tmp_path: Path) -> None:
    chromium = require_tool("chromium", "chromium")
    assert auth_env.service.auth is not None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        # The fake Microsoft uses a throwaway CA that only this test trusts.
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        try:
            await page.goto(await auth_env.service.auth.issue_start_link("contoso"))
            assert auth_env.callback in await page.inner_text(".redirect-uri")
            await page.click("#continue")
            await page.wait_for_selector("#username")
            assert "Sign in to your account" in await page.title()
            await page.fill("#username", OWNER)
            await page.click("#signin")
            await page.wait_for_selector("#owner")
            assert await page.inner_text("#owner") == OWNER
            assert "contoso" in await page.inner_text("#result")
            await page.screenshot(path=str(tmp_path / "success.png"))
            row = await auth_env.service.store.tenant("contoso")
            assert row is not None and row.auth_state == "authorized"

            await page.goto(await auth_env.service.auth.issue_start_link("contoso"))
            await page.click("#continue")
            await page.wait_for_selector("#username")
            await page.eval_on_selector("input[name=state]", "e => { e.value = e.value.slice(0, -4) + 'AAAA' }")
            await page.fill("#username", OWNER)
            response_status: list[int] = []
            page.on("response", lambda r: response_status.append(r.status) if "/callback/" in r.url else None)
            await page.click("#signin")
            await page.wait_for_selector("#explanation")
            assert "does not belong to a current authorization attempt" in await page.inner_text("#explanation")
            assert response_status == [400]
            await page.screenshot(path=str(tmp_path / "tampered.png"))
        finally:
            await browser.close()
    assert len([r for r in auth_env.idp.token_requests if r["grant_type"] == "authorization_code"]) == 1
