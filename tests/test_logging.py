"""Redaction: no credential reaches the log, whoever logs it and however."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from daemon.logging import REDACTED, bind, configure_logging, get_logger, redact_text, unbind

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJlLXZhbHVl"
SECRETS = ["0.AAAArefreshTOKENvalue", "authCODE123", "cl13nt-s3cr3t", JWT, "verifierXYZ"]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    yield out
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_secret_keys_are_redacted_at_any_depth(stream: io.StringIO) -> None:
    log = get_logger("test")
    log.info(
        "token response",
        access_token=JWT,
        refresh_token="0.AAAArefreshTOKENvalue",
        response={"id_token": JWT, "nested": [{"client_secret": "cl13nt-s3cr3t"}]},
        headers={"Authorization": "Bearer abc.def", "Content-Type": "application/json"},
        code_verifier="verifierXYZ",
        token_file="/etc/m365sync/pbx-token",
    )
    (event,) = events(stream)
    assert event["access_token"] == REDACTED
    assert event["refresh_token"] == REDACTED
    assert event["response"] == {"id_token": REDACTED, "nested": [{"client_secret": REDACTED}]}
    assert event["headers"] == {"Authorization": REDACTED, "Content-Type": "application/json"}
    assert event["token_file"] == "/etc/m365sync/pbx-token"  # a path, not a secret
    assert not any(secret in stream.getvalue() for secret in SECRETS)


def test_secrets_inside_strings_urls_and_exceptions(stream: io.StringIO) -> None:
    log = get_logger("test")
    log.info(
        "callback https://pbx/api/auth/callback/ms365?code=authCODE123&state=s1",
        body="grant_type=refresh_token&refresh_token=0.AAAArefreshTOKENvalue&client_secret=cl13nt-s3cr3t",
        raw=json.dumps({"access_token": JWT, "expires_in": 3600}),
        header="Authorization: Bearer cl13nt-s3cr3t",
    )
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert not any(secret in text for secret in SECRETS), text
    first = events(stream)[0]
    assert first["event"] == f"callback https://pbx/api/auth/callback/ms365?code={REDACTED}&state=s1"
    assert '"expires_in": 3600' in str(first["raw"])


def test_standard_library_loggers_are_redacted_too(stream: io.StringIO) -> None:
    logging.getLogger("msal.application").warning(
        "POST https://login/token data=refresh_token=0.AAAArefreshTOKENvalue&code=authCODE123"
    )
    logging.getLogger("aiohttp.access").warning(
        'GET /api/auth/callback/ms365?code=authCODE123 "Authorization: Bearer %s"', JWT
    )
    text = stream.getvalue()
    assert len(events(stream)) == 2
    assert not any(secret in text for secret in SECRETS), text


def test_tenant_and_run_id_are_bound(stream: io.StringIO) -> None:
    bind(tenant="contoso", run_id="r-1")
    get_logger("test").info("run started")
    unbind("run_id")
    get_logger("test").info("later")
    first, second = events(stream)
    assert (first["tenant"], first["run_id"]) == ("contoso", "r-1")
    assert second["tenant"] == "contoso" and "run_id" not in second


def test_console_format_is_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    try:
        get_logger("test").info("hello", refresh_token="0.AAAArefreshTOKENvalue")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert "hello" in out.getvalue() and "0.AAAArefreshTOKENvalue" not in out.getvalue()


def test_redact_text_leaves_ordinary_text_alone() -> None:
    text = "synced 12 users; next run at 06:00 (code path ok, token_file=/etc/x)"
    assert redact_text(text) == text
