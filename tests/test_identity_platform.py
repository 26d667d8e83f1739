"""The edge to the identity platform: a token endpoint that hangs ends a token
request (and a run) within the configured bound, an answer of the wrong shape
is a typed error, and an error that quotes the request never puts its secrets
into a run record, the state, the status outputs or the log."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
import requests

from auth_fixtures import ADMIN_TOKEN, AuthEnv, started_auth_env
from conftest import write_secret
from daemon.auth.platform import IdentityHttpClient, bounded, checked_token_answer
from daemon.commands import status
from daemon.errors import (
    AuthorizationRequired,
    IdentityPlatformError,
    IdentityPlatformPayloadError,
    IdentityPlatformUnavailable,
)
from daemon.scheduler import RunProgress
from daemon.sync.kinds import RUN_KINDS, SyncRequest
from sim.idp import FakeApp
from sim.idp_faults import ECHO, EMPTY_ACCESS_TOKEN, EXPIRES_IN_NOT_A_NUMBER, HANG, NOT_JSON

SECRET_DIRECTORY = "33333333-4444-4555-8666-777777777777"
SECRET_APP = "cccccccc-dddd-4eee-8fff-000000000000"
CANARY_SECRET = "CANARY-client-secret-7f3a9c1e"
CREDENTIAL_FIELDS = ("client_secret", "refresh_token", "code", "code_verifier", "client_assertion")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AuthEnv]:
    """The auth environment plus northwind: application mode with a client secret."""
    write_secret(tmp_path / "northwind-secret", CANARY_SECRET)
    northwind = f"""
[[tenants]]
name = "northwind"
directory_id = "{SECRET_DIRECTORY}"
application_id = "{SECRET_APP}"
auth_mode = "application"
client_secret_file = "northwind-secret"
authority_url = "{{idp_url}}"
ca_file = "{{ca_file}}"
[tenants.pbx]
scim_url = "http://127.0.0.1:9/scim/v2"
token_file = "pbx-token"
"""
    async with started_auth_env(tmp_path, northwind) as started:
        started.idp.register_app(SECRET_DIRECTORY, FakeApp(SECRET_APP, client_secret=CANARY_SECRET))
        yield started


def shorten_identity_timeout(env: AuthEnv, seconds: float) -> None:
    """As a reload of ``[runs] identity_timeout_seconds`` would."""
    config = env.service.config
    assert env.service.auth is not None
    env.service.auth.config = dataclasses.replace(
        config, runs=config.runs.model_copy(update={"identity_timeout_seconds": seconds})
    )


async def sign_in(env: AuthEnv) -> None:
    assert env.service.auth is not None
    async with aiohttp.ClientSession() as session:
        status_code, page, _ = await env.sign_in(session, await env.service.auth.issue_start_link("contoso"))
    assert status_code == 200, page


async def run(env: AuthEnv, tenant_name: str, run_id: str) -> tuple[str, str | None]:
    result = await env.service.supervisor.sync_now(SyncRequest(tenant_name, RUN_KINDS, "test"), run_id, RunProgress(run_id, "test"))
    row = await env.service.store.run(run_id)
    assert row is not None and row.finished_at is not None and row.result == result
    return result, row.error


# --- no answer ---


async def test_a_hung_token_endpoint_ends_the_run_within_the_bound(env: AuthEnv) -> None:
    assert env.service.auth is not None  # the app is built first: its discovery must not use up the short bound
    await env.service.auth.tokens.app(env.service.config.tenant("fabrikam"))
    shorten_identity_timeout(env, 0.5)
    env.idp.faults.set(HANG)
    started = time.monotonic()
    result, error = await run(env, "fabrikam", "hung1")
    elapsed = time.monotonic() - started
    assert env.idp.faults.faulted >= 1  # the token endpoint was asked, and never answered
    assert elapsed < 5, elapsed  # bound 0.5 s; the default would hold the run for 30 s
    assert result == "failed"
    assert error is not None and error.startswith("the identity platform did not answer within 0.5 s")
    row = await env.service.store.tenant("fabrikam")
    assert row is not None and row.auth_state != "reauthorization_required"  # a retry may pass: no admin needed


async def test_a_hung_refresh_is_a_typed_error_within_the_bound(env: AuthEnv) -> None:
    await sign_in(env)
    shorten_identity_timeout(env, 0.5)
    env.idp.faults.set(HANG)
    assert env.service.auth is not None
    started = time.monotonic()
    with pytest.raises(IdentityPlatformUnavailable, match=r"did not answer within 0\.5 s"):
        await env.service.auth.tokens.access_token("contoso", force_refresh=True)
    assert time.monotonic() - started < 5
    env.idp.faults.clear()  # the platform answers again: so does the token path
    assert await env.service.auth.tokens.access_token("contoso", force_refresh=True) in env.idp.issued_access_tokens


async def test_the_thread_call_is_bounded_even_when_the_http_timeout_is_not_reached() -> None:
    """A read timeout does not bound an answer that trickles in: asyncio.timeout does."""
    answered = threading.Event()
    started = time.monotonic()
    with pytest.raises(IdentityPlatformUnavailable, match=r"within 0\.2 s"):
        await bounded(0.2, answered.wait, 30)
    assert time.monotonic() - started < 5
    answered.set()  # let the worker thread go


def test_every_request_msal_makes_carries_the_configured_timeout() -> None:
    sent: list[dict[str, Any]] = []

    class RecordingSession(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
            sent.append(kwargs)
            response = requests.Response()
            response.status_code = 200
            response._content = json.dumps({"access_token": "at-1", "expires_in": 3600, "token_type": "Bearer"}).encode()
            return response

    client = IdentityHttpClient(RecordingSession(), lambda: 7.5)
    client.get("https://login.example/discovery")
    client.post("https://login.example/token", data={"grant_type": "client_credentials"})
    assert [kwargs["timeout"] for kwargs in sent] == [7.5, 7.5]


async def test_tenants_trusting_one_ca_file_share_one_http_client(env: AuthEnv) -> None:
    """A daemon of 500 tenants keeps a few connection pools, not 500."""
    assert env.service.auth is not None
    tokens, config = env.service.auth.tokens, env.service.config
    fabrikam, northwind = [await tokens.app(config.tenant(name)) for name in ("fabrikam", "northwind")]
    shared = fabrikam.http_client.http_client  # msal wraps the client it is given in its throttling one
    assert isinstance(shared, IdentityHttpClient) and northwind.http_client.http_client is shared


# --- answers of the wrong shape ---


@pytest.mark.parametrize("fault, reason", [
    (NOT_JSON, "with something that is not JSON"),
    (EMPTY_ACCESS_TOKEN, "access_token is not a non-empty string"),
    (EXPIRES_IN_NOT_A_NUMBER, "expires_in that is not a number"),
])
async def test_a_token_answer_of_the_wrong_shape_is_a_typed_error(env: AuthEnv, fault: str, reason: str) -> None:
    env.idp.faults.set(fault)
    result, error = await run(env, "fabrikam", f"shape-{fault}")
    assert result == "failed" and error is not None and reason in error
    assert env.service.auth is not None
    with pytest.raises(IdentityPlatformPayloadError, match=reason):
        await env.service.auth.tokens.access_token("fabrikam")
    env.idp.faults.clear()
    assert await env.service.auth.tokens.access_token("fabrikam") in env.idp.issued_access_tokens  # nothing bad was cached


@pytest.mark.parametrize("text, reason", [
    ("[1, 2]", "JSON that is not an object"),
    ('{"token_type": "Bearer"}', "without an access token"),
    ('{"access_token": 12, "expires_in": 3600}', "access_token is not a non-empty string"),
    ('{"access_token": "at", "expires_in": true}', "expires_in that is not a number"),
    ('{"access_token": "at", "expires_in": NaN}', "expires_in that is not a number"),
    ('{"access_token": "at", "expires_in": 3600, "refresh_token": 5}', "refresh_token that is not text"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
])
def test_token_answer_shapes_are_checked(text: str, reason: str) -> None:
    with pytest.raises(IdentityPlatformPayloadError, match=reason):
        checked_token_answer(200, text)


def test_an_error_answer_keeps_its_codes_and_loses_its_words() -> None:
    upstream = {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret. Body: client_secret=s3cr3t",
                "error_codes": [7000215], "trace_id": "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc", "timestamp": "2026-01-01 00:00:00Z"}
    reduced = json.loads(checked_token_answer(401, json.dumps(upstream)))
    assert reduced == {"error": "invalid_client", "error_codes": [7000215], "trace_id": upstream["trace_id"],
                       "error_description": "AADSTS7000215: the token endpoint refused the request (invalid_client)."}
    odd = json.loads(checked_token_answer(400, json.dumps({"error": "client_secret=s3cr3t", "error_codes": "x"})))
    assert odd["error"] == "unknown_error" and odd["error_codes"] == [] and "s3cr3t" not in json.dumps(odd)


# --- an error that quotes the request ---


async def outputs(env: AuthEnv) -> str:
    """Everything an operator or a monitor sees: run records, tenant states, status --json, /readyz, /api/status, the log."""
    seen: list[str] = []
    async with env.service.store.db.conn.execute("SELECT * FROM runs") as cursor:
        seen += [repr(row) for row in await cursor.fetchall()]
    seen += [repr(row) for row in await env.service.store.tenants()]
    out = io.StringIO()
    await status(env.service.config, True, out)
    seen.append(out.getvalue())
    async with aiohttp.ClientSession() as session:
        for path, headers in (("/readyz", {}), ("/api/status", {"Authorization": f"Bearer {ADMIN_TOKEN}"})):
            async with session.get(env.base_url + path, headers=headers) as response:
                assert response.status in (200, 503), path
                seen.append(await response.text())
    seen.append(env.log.getvalue())
    return "\n".join(seen)


def echoed_credentials(env: AuthEnv) -> set[str]:
    """The credentials in the request bodies the token endpoint quoted back."""
    found: set[str] = set()
    for body in env.idp.faults.echoed:
        for name, values in parse_qs(body).items():
            if name in CREDENTIAL_FIELDS:
                found.update(values)
    return found


async def test_an_error_quoting_the_request_never_reaches_records_status_or_logs(env: AuthEnv) -> None:
    env.idp.access_token_lifetime = 60  # under msal's 5 minutes: the run's first token is a refresh
    await sign_in(env)
    refresh_token = next(iter(env.idp._grants))
    env.idp.faults.set(ECHO)

    contoso_result, contoso_error = await run(env, "contoso", "echo-delegated")
    northwind_result, northwind_error = await run(env, "northwind", "echo-secret")
    fabrikam_result, _ = await run(env, "fabrikam", "echo-certificate")
    assert env.service.auth is not None
    with pytest.raises(IdentityPlatformError):  # a second refresh, straight through the token path
        await env.service.auth.tokens.access_token("contoso", force_refresh=True)

    credentials = echoed_credentials(env)
    assert {CANARY_SECRET, refresh_token} <= credentials  # the endpoint did quote them back
    assert any(c.startswith("eyJ") for c in credentials)  # and fabrikam's certificate assertion
    seen = await outputs(env)
    assert [c for c in credentials if c in seen] == []
    assert "Request body" not in seen and "grant_type=" not in seen  # none of the upstream words either
    # What is kept: the codes, in our own words.
    assert contoso_result == "failed" and contoso_error is not None
    assert contoso_error.startswith("token refresh failed: AADSTS900144: the token endpoint refused the request (invalid_request)")
    assert northwind_result == fabrikam_result == "reauthorization_required" and northwind_error is not None
    assert "AADSTS900144" in northwind_error and "invalid_request" in northwind_error
    row = await env.service.store.tenant("northwind")
    assert row is not None and row.auth_reason == "AADSTS900144: the token endpoint refused the request (invalid_request)."


async def test_a_code_redemption_quoting_the_verifier_shows_only_the_code(env: AuthEnv) -> None:
    assert env.service.auth is not None
    env.idp.faults.set(ECHO)
    async with aiohttp.ClientSession() as session:
        status_code, page, _ = await env.sign_in(session, await env.service.auth.issue_start_link("contoso"))
    assert status_code == 400 and "AADSTS900144" in page
    credentials = echoed_credentials(env)
    assert len(credentials) >= 2  # the code and its verifier were quoted back
    seen = await outputs(env) + "\n".join(env.pages)
    assert [c for c in credentials if c in seen] == []
    with pytest.raises(AuthorizationRequired):  # nothing was stored
        await env.service.auth.tokens.access_token("contoso")
