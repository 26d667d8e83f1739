"""`m365sync authorize` and `redirect-uris`, and the scopes each feature needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import basic_config, tenant_toml
from daemon.auth.scopes import application_scopes, delegated_scopes
from daemon.cli import main
from daemon.config import load_config

WriteConfig = Callable[[str], Path]


def test_redirect_uris_prints_exact_pbx_and_sbc_uris(write_config: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(basic_config(server='public_url = "https://pbx.example.com:8887/"\nsbc_public_url = "https://sbc.example.com:8887"'))
    assert main(["redirect-uris", "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "PBX: https://pbx.example.com:8887/api/auth/callback/ms365",
        "SBC: https://sbc.example.com:8887/api/auth/callback/ms365",
    ]


def test_authorize_prints_a_signed_one_time_link(write_config: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(basic_config(server='sbc_public_url = "https://sbc.example.com:8887"'))
    assert main(["authorize", "--config", str(path), "--tenant", "contoso"]) == 0
    out = capsys.readouterr().out
    assert "https://pbx.example.com:8887/api/auth/start/ms365?tenant=contoso&via=pbx&link=" in out
    assert main(["authorize", "--config", str(path), "--tenant", "contoso", "--via", "sbc"]) == 0
    assert "https://sbc.example.com:8887/api/auth/start/ms365?tenant=contoso&via=sbc&link=" in capsys.readouterr().out
    assert (path.parent / "state.db").stat().st_mode & 0o777 == 0o600


def test_authorize_unknown_tenant_is_a_clear_error(write_config: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(basic_config())
    assert main(["authorize", "--config", str(path), "--tenant", "nope"]) == 2
    assert 'no tenant named "nope" (known: contoso)' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "users", "expected"),
    [
        ("", 'enabled = true', ["User.Read.All"]),
        ("", "enabled = false", ["User.Read.All"]),  # every run reads the users delta
        ('groups = ["11111111-2222-3333-4444-555555555555"]', "enabled = true", ["User.Read.All", "Group.Read.All"]),
        ('groups = ["11111111-2222-3333-4444-555555555555"]', "enabled = false", ["User.Read.All", "Group.Read.All"]),
    ],
)
def test_delegated_scopes_are_the_minimum(write_config: WriteConfig, extra: str, users: str, expected: list[str]) -> None:
    tenant = load_config(write_config(basic_config(tenant_toml(extra=extra, users=users)))).tenants[0]
    assert delegated_scopes(tenant) == [f"https://graph.microsoft.com/{s}" for s in expected]


def test_feature_scopes_and_national_clouds(write_config: WriteConfig) -> None:
    text = basic_config(tenant_toml(extra='national_cloud = "CHINA"')) + "\n[tenants.personal_contacts]\nenabled = true\n[tenants.events]\nenabled = true\n[tenants.shared_mailbox]\nenabled = true\n"
    tenant = load_config(write_config(text)).tenants[0]
    base = "https://microsoftgraph.chinacloudapi.cn"
    assert delegated_scopes(tenant) == [f"{base}/{s}" for s in (
        "User.Read.All", "Contacts.Read", "Contacts.Read.Shared", "Calendars.Read", "Calendars.Read.Shared", "MailboxSettings.Read")]
    assert application_scopes(tenant) == [f"{base}/.default"]
