"""Authorization with MSAL for real against a fake Entra over HTTPS."""

from __future__ import annotations

import json

import aiohttp
import pytest

from auth_fixtures import ADMIN_TOKEN, DIRECTORY, OWNER, AuthEnv, state_of
from daemon.errors import AuthorizationRequired


async def authorize(env: AuthEnv, session: aiohttp.ClientSession) -> tuple[int, str, str]:
    assert env.service.auth is not None
    link = await env.service.auth.issue_start_link("contoso")
    return await env.sign_in(session, link)


async def test_delegated_flow_end_to_end(auth_env: AuthEnv) -> None:
    async with aiohttp.ClientSession() as session:
        status, page, _ = await authorize(auth_env, session)
        assert status == 200, page
        assert OWNER in page and "contoso" in page and DIRECTORY in page
        async with session.get(auth_env.base_url + "/readyz") as response:
            body = await response.json()
    assert body["tenants"]["contoso"]["reason"] == "ready"
    row = await auth_env.service.store.tenant("contoso")
    assert row is not None and row.auth_state == "authorized" and row.auth_owner == OWNER and row.has_token_cache
    assert auth_env.service.supervisor.pending_syncs == {"contoso"}
    assert auth_env.service.auth is not None
    token = await auth_env.service.auth.tokens.access_token("contoso")
    assert token in auth_env.idp.issued_access_tokens
    refreshed = await auth_env.service.auth.tokens.access_token("contoso", force_refresh=True)
    assert refreshed != token and refreshed in auth_env.idp.issued_access_tokens
    grants = [r["grant_type"] for r in auth_env.idp.token_requests]
    assert grants == ["authorization_code", "refresh_token"]
    redemption = auth_env.idp.token_requests[0]
    assert redemption["redirect_uri"] == auth_env.callback
    assert "User.Read.All" in redemption["scope"] and "offline_access" in redemption["scope"]
    metrics = auth_env.service.metrics.render().decode()
    assert 'm365sync_auth_state{state="authorized",tenant="contoso"} 1.0' in metrics


async def test_application_mode_uses_a_certificate(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    token = await auth_env.service.auth.tokens.access_token("fabrikam")
    assert token in auth_env.idp.issued_access_tokens
    assert auth_env.idp.token_requests[-1]["grant_type"] == "client_credentials"
    assert auth_env.idp.token_requests[-1]["scope"].endswith("/.default")
    row = await auth_env.service.store.tenant("fabrikam")
    assert row is not None and row.auth_state == "authorized"


async def test_start_page_needs_a_valid_link_or_the_admin_token(auth_env: AuthEnv) -> None:
    start = f"{auth_env.base_url}/api/auth/start/ms365?tenant=contoso"
    async with aiohttp.ClientSession() as session:
        assert (await auth_env.fetch(session, start))[0] == 401
        assert (await auth_env.fetch(session, start + "&link=forged.value"))[0] == 403
        wrong_admin = {"Authorization": "Bearer not-the-admin-token"}
        assert (await auth_env.fetch(session, start, headers=wrong_admin))[0] == 401
        status, page, _ = await auth_env.fetch(session, start, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200
        assert f"<code class='redirect-uri'>{auth_env.callback}</code>" in page
        assert auth_env.service.auth is not None
        link = await auth_env.service.auth.issue_start_link("contoso")
        assert (await auth_env.fetch(session, link))[0] == 200
        assert (await auth_env.fetch(session, link))[0] == 403  # single use
        other_tenant = link.replace("tenant=contoso", "tenant=fabrikam")
        assert (await auth_env.fetch(session, other_tenant))[0] == 403  # signed for contoso only


async def test_forged_and_cross_tenant_states_store_nothing(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    async with aiohttp.ClientSession() as session:
        state = state_of(await auth_env.continue_url(session))
        tenant, attempt, mac = state.split(".")
        for bad in (f"{tenant}.{attempt}.{mac[:-2]}xx", f"fabrikam.{attempt}.{mac}", f"{tenant}.other.{mac}", "", "nonsense"):
            code, text, _ = await auth_env.fetch(session, f"{auth_env.callback}?code=abc&state={bad}")
            assert code == 400 and "Nothing was stored" in text
        row = await auth_env.service.store.tenant("contoso")
        assert row is not None and row.auth_state == "authorization_required" and not row.has_token_cache


async def test_replayed_callback_is_refused(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    async with aiohttp.ClientSession() as session:
        status, _, _ = await auth_env.sign_in(session, await auth_env.service.auth.issue_start_link("contoso"))
        assert status == 200
        callback = next(u for u in auth_env.urls if u.startswith(auth_env.callback))
        status, page, _ = await auth_env.fetch(session, callback)
    assert status == 400 and "already used" in page
    assert [r["grant_type"] for r in auth_env.idp.token_requests] == ["authorization_code"]


async def test_expired_state_is_refused(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    store = auth_env.service.store
    async with aiohttp.ClientSession() as session:
        state = state_of(await auth_env.continue_url(session))
        real_clock = store.clock
        store.clock = lambda: real_clock() + 16 * 60  # 16 minutes later
        try:
            status, text, _ = await auth_env.fetch(session, f"{auth_env.callback}?code=x&state={state}")
        finally:
            store.clock = real_clock
    assert status == 400 and "expired" in text


async def test_expired_start_link_is_refused(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    store = auth_env.service.store
    link = await auth_env.service.auth.issue_start_link("contoso")
    real_clock = store.clock
    store.clock = lambda: real_clock() + 15 * 60 + 1
    try:
        async with aiohttp.ClientSession() as session:
            status, _, _ = await auth_env.fetch(session, link)
    finally:
        store.clock = real_clock
    assert status == 403


async def test_user_cancel_shows_access_denied(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    async with aiohttp.ClientSession() as session:
        status, page, _ = await auth_env.sign_in(session, await auth_env.service.auth.issue_start_link("contoso"), action="cancel")
    assert status == 400 and "Sign-in cancelled" in page
    assert "authorization failed" in auth_env.log.getvalue()


async def test_missing_consent_links_to_admin_consent(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    auth_env.delegated_app.consented = False
    async with aiohttp.ClientSession() as session:
        status, page, _ = await auth_env.sign_in(session, await auth_env.service.auth.issue_start_link("contoso"))
    assert status == 400 and "AADSTS65001" in page
    assert f"{auth_env.idp_url}/{DIRECTORY}/adminconsent?client_id=" in page


async def test_web_platform_redirect_uri_explains_7000218(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    app = auth_env.delegated_app
    app.web_redirect_uris, app.public_redirect_uris = app.public_redirect_uris, set()
    async with aiohttp.ClientSession() as session:
        status, page, _ = await auth_env.sign_in(session, await auth_env.service.auth.issue_start_link("contoso"))
    assert status == 400 and "AADSTS7000218" in page
    assert "Mobile and desktop applications" in page
    row = await auth_env.service.store.tenant("contoso")
    assert row is not None and not row.has_token_cache


async def test_unregistered_redirect_uri_is_shown_by_microsoft_and_explained_here(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    auth_env.delegated_app.public_redirect_uris = {auth_env.callback + "/"}  # the classic trailing slash
    async with aiohttp.ClientSession() as session:
        idp_status, idp_page, _ = await auth_env.fetch(session, await auth_env.continue_url(session))
    assert idp_status == 400 and "AADSTS50011" in idp_page
    # Entra shows 50011 on its own page; the callback also explains it when it arrives there.
    from daemon.auth.explain import AuthContext, explain

    problem = explain("invalid_request", "AADSTS50011: The redirect URI does not match.", AuthContext(auth_env.service.config.tenants[0], (auth_env.callback,), auth_env.callback))
    assert auth_env.callback in problem.explanation and "trailing slash" in " ".join(problem.actions)


async def test_public_client_credential_error_is_explained(auth_env: AuthEnv) -> None:
    """AADSTS700025 comes back as Entra's JSON; the explanation names the fix."""
    from daemon.auth.explain import AuthContext, explain
    from daemon.tls import client_ssl_context

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{auth_env.idp_url}/{DIRECTORY}/oauth2/v2.0/token",
            data={"grant_type": "authorization_code", "client_id": auth_env.delegated_app.client_id, "code": "x",
                  "redirect_uri": auth_env.callback, "client_secret": "should-not-be-sent"},
            ssl=client_ssl_context(auth_env.ca_file),
        ) as response:
            body = await response.json()
    assert set(body) >= {"error", "error_description", "error_codes"}
    assert body["error_description"].startswith("AADSTS700025:") and body["error_codes"] == [700025]
    problem = explain(body["error"], body["error_description"], AuthContext(auth_env.service.config.tenants[0], (auth_env.callback,)))
    assert problem.code == "AADSTS700025" and "application" in " ".join(problem.actions)


async def test_unknown_directory_suggests_another_cloud(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    del auth_env.idp.tenants[DIRECTORY]
    async with aiohttp.ClientSession() as session:
        status, page, _ = await auth_env.fetch(session, await auth_env.service.auth.issue_start_link("contoso"))
    assert status == 400 and "AADSTS90002" in page
    for cloud in ("CHINA", "USGOV", "USGOV_DOD"):  # every other national cloud is suggested, with its sign-in host
        assert f"&quot;{cloud}&quot; (login." in page
    assert "&quot;GLOBAL&quot;" not in page
    assert f"{auth_env.idp_url}/{DIRECTORY}" in page


async def test_owner_departure_requires_reauthorization_and_other_tenants_go_on(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    auth = auth_env.service.auth
    async with aiohttp.ClientSession() as session:
        assert (await authorize(auth_env, session))[0] == 200
        auth_env.idp.revoke_grants(OWNER, 50057)
        for _ in range(3):
            with pytest.raises(AuthorizationRequired):
                await auth.tokens.access_token("contoso", force_refresh=True)
        async with session.get(auth_env.base_url + "/readyz") as response:
            body = await response.json()
    assert response.status == 503
    contoso = body["tenants"]["contoso"]
    assert contoso["reason"] == "reauthorization_required" and "AADSTS50057" in contoso["detail"]
    metrics = auth_env.service.metrics.render().decode()
    assert 'm365sync_auth_state{state="reauthorization_required",tenant="contoso"} 1.0' in metrics
    assert 'm365sync_auth_state{state="authorized",tenant="contoso"} 0.0' in metrics
    assert auth_env.log.getvalue().count("tenant needs re-authorization") == 1  # once per change
    assert await auth.tokens.access_token("fabrikam") in auth_env.idp.issued_access_tokens
    async with aiohttp.ClientSession() as session:  # re-running authorize restores it
        auth_env.idp.add_user("new-owner@contoso.example")
        status, _, _ = await auth_env.sign_in(session, await auth.issue_start_link("contoso"), username="new-owner@contoso.example")
    assert status == 200
    assert await auth.tokens.access_token("contoso", force_refresh=True) in auth_env.idp.issued_access_tokens
    row = await auth_env.service.store.tenant("contoso")
    assert row is not None and row.auth_state == "authorized" and row.auth_owner == "new-owner@contoso.example"


async def test_token_cache_is_sealed_at_rest_with_a_key(tmp_path: object) -> None:
    """With a key the database holds no refresh token; without one it would."""
    from pathlib import Path

    from state.open import open_database
    from state.sealing import Sealer
    from state.store import Store

    refresh_token = "0.rt-VERYSECRETrefresh"
    cache = json.dumps({"RefreshToken": {"k": {"secret": refresh_token}}}).encode()
    for key, expect_plain in ((None, True), (b"k3y-from-LoadCredentialEncrypted", False)):
        path = Path(str(tmp_path)) / f"state-{expect_plain}.db"
        db = await open_database(path)
        store = Store(db)
        sealer = Sealer(key)
        await store.register_tenant("t", "d", "a")
        await store.save_token_cache("t", sealer.seal(cache))
        stored = await store.load_token_cache("t")
        assert stored is not None and sealer.open(stored) == cache
        await db.close()
        raw = path.read_bytes() + (Path(f"{path}-wal").read_bytes() if Path(f"{path}-wal").exists() else b"")
        assert (refresh_token.encode() in raw) is expect_plain


def test_sealed_cache_without_its_key_is_a_clear_error() -> None:
    from daemon.errors import StateError
    from state.sealing import Sealer

    sealed = Sealer(b"one key").seal(b"tokens")
    with pytest.raises(StateError, match="no encryption key is configured"):
        Sealer().open(sealed)
    with pytest.raises(StateError, match="do not open with the configured key"):
        Sealer(b"another key").open(sealed)
