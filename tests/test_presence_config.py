"""Presence and the fast polls in the configuration: their defaults, the
scope presence adds (only when enabled), and check-config refusing presence
where Graph has none (21Vianet)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from auth_fixtures import AuthEnv
from conftest import basic_config, tenant_toml
from daemon.auth.scopes import delegated_scopes
from daemon.cli import main
from daemon.config import load_config
from daemon.config_checks import findings

WriteConfig = Callable[[str], Path]
REAL_HOST = 'public_url = "https://pbx.contoso.com:8887"'
PRESENCE_ON = "\n[tenants.presence]\nenabled = true\n"


def test_defaults_poll_users_every_minute_mailboxes_every_half_hour_and_leave_presence_off(
        write_config: WriteConfig) -> None:
    tenant = load_config(write_config(basic_config(server=REAL_HOST))).tenants[0]
    assert tenant.users.poll_seconds == 60 and tenant.personal_contacts.poll_seconds == 1800
    assert not tenant.presence.enabled and tenant.presence.poll_seconds == 30
    assert tenant.sync_time == "0 */6 * * *"  # the full reconciliation keeps its schedule


def test_presence_read_all_is_asked_for_only_when_presence_is_enabled(write_config: WriteConfig) -> None:
    off = load_config(write_config(basic_config(server=REAL_HOST))).tenants[0]
    on = load_config(write_config(basic_config(tenant_toml() + PRESENCE_ON, server=REAL_HOST))).tenants[0]
    assert not any(scope.endswith("/Presence.Read.All") for scope in delegated_scopes(off))
    assert set(delegated_scopes(on)) - set(delegated_scopes(off)) == {"https://graph.microsoft.com/Presence.Read.All"}


def test_check_config_refuses_presence_in_21vianet_with_the_reason(
        write_config: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    china = tenant_toml(extra='national_cloud = "CHINA"') + PRESENCE_ON
    path = write_config(basic_config(china, server=REAL_HOST))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tenants[0].presence.enabled: Teams presence is not available in national_cloud = \"CHINA\"" in err
    assert "set presence.enabled = false" in err
    for cloud in ("GLOBAL", "USGOV", "USGOV_DOD"):  # the API page lists these
        config = load_config(write_config(basic_config(
            tenant_toml(extra=f'national_cloud = "{cloud}"') + PRESENCE_ON, server=REAL_HOST)))
        assert not [p for p in findings(config) if p.field.endswith("presence.enabled")]


@pytest.mark.parametrize(("section", "key", "value"), [
    ("users", "poll_seconds", "5"), ("personal_contacts", "poll_seconds", "30"), ("presence", "poll_seconds", "1"),
])
def test_poll_intervals_have_a_floor(write_config: WriteConfig, capsys: pytest.CaptureFixture[str],
                                     section: str, key: str, value: str) -> None:
    users = f"{key} = {value}" if section == "users" else ""
    sections = "" if section == "users" else f"\n[tenants.{section}]\n{key} = {value}\n"
    path = write_config(basic_config(tenant_toml(users=users) + sections, server=REAL_HOST))
    assert main(["check-config", "--config", str(path)]) == 2
    assert f"tenants[0].{section}.{key}" in capsys.readouterr().err


async def test_enabling_presence_on_a_delegated_tenant_asks_the_owner_to_sign_in_again(auth_env: AuthEnv) -> None:
    service = auth_env.service
    assert service.auth is not None
    async with aiohttp.ClientSession() as session:
        assert (await auth_env.sign_in(session, await service.auth.issue_start_link("contoso")))[0] == 200
        assert {s.tenant: s.reason for s in await service.supervisor.tenant_statuses()}["contoso"] == "ready"
        path = auth_env.config_dir / "config.toml"
        path.write_text(path.read_text().replace('starting_extension_number = "1001"\n',
                                                 'starting_extension_number = "1001"\n' + PRESENCE_ON, 1))
        await service.supervisor.apply(load_config(path))
        status = {s.tenant: s for s in await service.supervisor.tenant_statuses()}["contoso"]
        assert status.reason == "reauthorization_required" and not status.ready
        assert "needs Presence.Read.All" in status.detail and "m365sync authorize" in status.detail
        assert (await auth_env.sign_in(session, await service.auth.issue_start_link("contoso")))[0] == 200
    assert "Presence.Read.All" in auth_env.idp.token_requests[-1]["scope"]  # asked for at this sign-in
    assert {s.tenant: s.reason for s in await service.supervisor.tenant_statuses()}["contoso"] == "ready"
