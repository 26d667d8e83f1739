"""Canary secrets: the real daemon is given distinctive secrets (the PBX token,
the client secret, the admin token, the state key, and the access tokens the
fake Entra issues), every upstream echoes what it was sent in its errors, and
no outlet of the daemon shows any of them: the debug log, the runs API,
``/api/status``, the status page, ``/readyz``, ``/metrics``, ``status --json``,
``explain``, and the bytes of the SQLite database and its write-ahead log.

The echoes: the PBX (a proxy before scim2-server) answers writes with a SCIM
400 whose ``detail`` quotes the request's Authorization header; Graph (the
simulator) answers ``/users/delta`` with a 400 whose message quotes the bearer
token; the token endpoint quotes the request body (client secret included).
Each fault keeps what it echoed, so the test shows the canaries did come back.
What is stored and shown keeps the upstreams' codes (``HTTP 400 invalidSyntax``,
``BadRequest``) with our own words; their own words go to the log alone."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import aiohttp
import pytest
import structlog

from auth_fixtures import AuthEnv
from conftest import write_secret
from daemon.config import load_config
from daemon.logging import configure_logging
from daemon.redact import REDACTED, forget_secrets, redact_text, remember_secret, short_reason
from daemon.service import Service
from live_fixtures import ADMIN_TOKEN, NO_BULK, LiveEnv, started_live_env
from sim.generator import generate_tenant
from sim.idp_faults import ECHO
from sim.pbx import ScimServer

CANARY_PBX_TOKEN = "CANARY-pbx-token-5d1e0c9b7a"
CANARY_STATE_KEY = "CANARY-state-key-3f8a2b6e1c"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def canary_pbx() -> Iterator[ScimServer]:
    with ScimServer(token=CANARY_PBX_TOKEN, service_provider_config=NO_BULK) as server:
        yield server


@pytest.fixture
async def env(tmp_path: Path, canary_pbx: ScimServer) -> AsyncIterator[LiveEnv]:
    async with started_live_env(tmp_path, canary_pbx) as live:
        write_secret(tmp_path / "state-key", CANARY_STATE_KEY)
        config = live.config.read_text().replace('path = "state.db"', 'path = "state.db"\nencryption_key_file = "state-key"')
        live.config.write_text(config)
        generate_tenant(live.tenant, users=4, photo_fraction=0)
        yield live


async def sync_now(service: Service, base: str, session: aiohttp.ClientSession) -> str:
    async with session.post(f"{base}/api/tenants/contoso/sync", headers=ADMIN) as response:
        assert response.status == 202, await response.text()
        run_id = str((await response.json())["run_id"])
    await service.supervisor.schedules["contoso"].wait(run_id)
    return run_id


async def test_no_outlet_shows_a_secret_that_an_upstream_echoed(env: LiveEnv, tmp_path: Path) -> None:
    log = io.StringIO()
    configure_logging("debug", "json", stream=log)
    outlets: dict[str, str] = {}
    service = Service(load_config(env.config), environ={})
    try:
        env.proxy.echo_authorization = True  # the start-up run: the PBX echoes every write's token
        await service.start()
        base = f"http://127.0.0.1:{service.bound_port}"
        schedule = service.supervisor.schedules["contoso"]
        startup = schedule.current or schedule.queued
        assert startup is not None
        await schedule.wait(startup.run_id)
        run_ids = [startup.run_id]
        env.proxy.echo_authorization = False
        async with aiohttp.ClientSession() as session:
            env.sim.fail_next(400, count=100, path_pattern="/users/delta", code="BadRequest", echo_authorization=True)
            run_ids.append(await sync_now(service, base, session))
            env.sim.faults.scripted.clear()
            env.idp.faults.set(ECHO)  # Graph's 401 makes the daemon ask the token endpoint again
            env.sim.fail_next(401, count=1, path_pattern="/users/delta", code="InvalidAuthenticationToken")
            run_ids.append(await sync_now(service, base, session))
            env.idp.faults.clear()

            for run_id in run_ids:
                async with session.get(f"{base}/api/tenants/contoso/runs/{run_id}", headers=ADMIN) as response:
                    assert response.status == 200
                    outlets[f"run {run_id}"] = await response.text()
            for path, headers in (("/api/status", ADMIN), ("/", ADMIN), ("/readyz", {}), ("/metrics", {})):
                async with session.get(base + path, headers=headers) as response:
                    assert response.status in (200, 503), path
                    outlets[path] = await response.text()
        member = next(str(r.data["userPrincipalName"]) for r in env.tenant.users.records.values()
                      if r.data.get("userType") == "Member" and r.data.get("accountEnabled"))
        for args in (("status", "--json"), ("explain", "--tenant", "contoso", member)):
            _, out, err = await env.m365sync(*args)
            outlets[" ".join(args)] = out + err
        for name in ("state.db", "state.db-wal"):
            outlets[name] = (tmp_path / name).read_bytes().decode("latin-1")
    finally:
        await service.stop()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    outlets["log"] = log.getvalue()
    outlets["state.db after stop"] = (tmp_path / "state.db").read_bytes().decode("latin-1")

    # The upstreams did echo the canaries, so a leak would show.
    client_secret = (tmp_path / "client-secret").read_text().strip()
    assert f"Bearer {CANARY_PBX_TOKEN}" in env.proxy.echoed
    assert any(header.removeprefix("Bearer ") in env.idp.issued_access_tokens for header in env.sim.faults.echoed)
    assert any(client_secret in parse_qs(body).get("client_secret", []) for body in env.idp.faults.echoed)
    # And the runs did meet them: the PBX's refusal, Graph's, the token endpoint's, each kept as
    # its codes and our words; the upstreams' own words reach the log alone (redacted there).
    assert "HTTP 400 invalidSyntax" in outlets[f"run {run_ids[0]}"] and "BadRequest" in outlets[f"run {run_ids[1]}"]
    for words in ("cannot parse the request", "Simulated 400"):
        assert words in outlets["log"]
        assert [name for name, text in outlets.items() if words in text and name != "log"] == [], words
    assert "AADSTS900144" in outlets[f"run {run_ids[2]}"]
    assert "reauthorization_required" in outlets["/readyz"]
    assert "last error (" in outlets[f"explain --tenant contoso {member}"]  # the PBX's refusal, as explain shows it

    canaries = {CANARY_PBX_TOKEN, CANARY_STATE_KEY, ADMIN_TOKEN, client_secret, *env.idp.issued_access_tokens}
    leaks = {(name, canary) for name, text in outlets.items() for canary in canaries if canary in text}
    assert leaks == set()


def test_a_remembered_secret_is_redacted_by_value_in_every_spelling() -> None:
    forget_secrets()
    try:
        remember_secret("s3cr3t/value+with=chars")
        remember_secret("short")  # under the minimum: common words stay
        text = "quoted s3cr3t/value+with=chars, in a URL s3cr3t%2Fvalue%2Bwith%3Dchars; short"
        assert redact_text(text) == f"quoted {REDACTED}, in a URL {REDACTED}; short"
    finally:
        forget_secrets()


def test_credential_fields_are_redacted_in_form_json_and_query_shapes() -> None:
    shapes = [
        "client_secret=abc123&grant_type=x", '{"refresh_token": "abc123"}', "?assertion=abc123",
        "client_assertion=abc123", "password=abc123", "code_verifier=abc123", "Authorization: Bearer abc123",
        "'access_token': 'abc123'",
    ]
    for shape in shapes:
        assert "abc123" not in redact_text(shape), shape


def test_a_private_key_is_redacted_whole_and_by_its_lines(tmp_path: Path) -> None:
    from daemon.secrets import read_secret
    from sim.entra import certificate_pair

    forget_secrets()
    try:
        _, key_pem = certificate_pair()
        write_secret(tmp_path / "app.key", key_pem.decode())
        read_secret(tmp_path / "app.key")
        body_line = key_pem.decode().splitlines()[1]
        assert body_line not in redact_text(f"the PBX said: {body_line}")
        assert "PRIVATE KEY" not in redact_text(key_pem.decode())
    finally:
        forget_secrets()


def test_a_stored_reason_is_short_and_redacted() -> None:
    reason = short_reason("the PBX refused: Authorization: Bearer abcdefgh " + "x" * 1000)
    assert reason is not None and len(reason) == 300 and "abcdefgh" not in reason


async def test_issued_tokens_and_the_private_key_are_redacted_by_value(auth_env: AuthEnv) -> None:
    """What the token path received (a sign-in's refresh and access tokens, an
    application's access token) and read (its certificate's private key)."""
    assert auth_env.service.auth is not None
    async with aiohttp.ClientSession() as session:
        status, page, _ = await auth_env.sign_in(session, await auth_env.service.auth.issue_start_link("contoso"))
    assert status == 200, page
    await auth_env.service.auth.tokens.access_token("fabrikam")
    refresh_tokens = set(auth_env.idp._grants)
    access_tokens = set(auth_env.idp.issued_access_tokens)
    assert len(refresh_tokens) == 1 and len(access_tokens) == 2  # the owner's sign-in, the application's token
    for token in refresh_tokens | access_tokens:
        assert redact_text(f"the PBX said: {token}.") == f"the PBX said: {REDACTED}."
    key_line = (auth_env.config_dir / "app.key").read_text().splitlines()[1]
    assert redact_text(f"the PBX said: {key_line}") == f"the PBX said: {REDACTED}"


def test_readyz_names_a_code_never_the_words_of_a_stored_reason(write_config: Callable[[str], Path]) -> None:
    from conftest import basic_config
    from daemon.health import tenant_status
    from state.store import TenantRow

    tenant = load_config(write_config(basic_config())).tenants[0]
    row = TenantRow(tenant.name, "d", "a", "reauthorization_required", None, True,
                    auth_reason="AADSTS7000215: Invalid client secret provided: s3cr3t-quoted-back")
    status = tenant_status(tenant, row, "config.toml")
    assert (status.ready, status.reason) == (False, "reauthorization_required")
    assert "AADSTS7000215" in status.detail and "s3cr3t" not in status.detail and "Invalid" not in status.detail


def test_issued_tokens_are_kept_within_a_bound_and_read_secrets_stay() -> None:
    from daemon.redact import _Registry

    registry = _Registry(issued_limit=2)
    registry.add("a-secret-from-a-file", issued=False)
    for token in ("issued-token-one", "issued-token-two", "issued-token-three"):
        registry.add(token, issued=True)
    registry.add("issued-token-two", issued=True)  # remembered again (still in the cache): kept
    registry.add("issued-token-four", issued=True)
    text = "a-secret-from-a-file issued-token-one issued-token-two issued-token-three issued-token-four"
    assert registry.scrub(text) == f"{REDACTED} issued-token-one {REDACTED} issued-token-three {REDACTED}"
