"""check-config catches what would only break later, each finding with its field
path and its fix; the daemon's start only logs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from conftest import REPO, basic_config, tenant_toml, write_secret
from daemon import accounts
from daemon.accounts import Account
from daemon.cli import main
from daemon.config import load_config
from daemon.config_checks import findings
from daemon.errors import ConfigError
from daemon.service import Service

WriteConfig = Callable[[str], Path]
REAL_HOST = 'public_url = "https://pbx.contoso.com:8887"'  # not the example's placeholder


def check_config(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    code = main(["check-config", *flags, "--config", str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "text_of", "fix"),
    [
        ("tenants[0].pbx.token_file", lambda d: basic_config(server=REAL_HOST), "write the PBX's SCIM API token"),
        ("server.admin_token_file", lambda d: basic_config(server=REAL_HOST), "openssl rand -base64 32"),
        ("state.encryption_key_file",
         lambda d: basic_config(server=REAL_HOST).replace('path = "state.db"',
                                                          'path = "state.db"\nencryption_key_file = "state-key"'),
         "the same on every host"),
    ],
)
def test_an_empty_secret_file_is_an_error_naming_its_field(
    write_config: WriteConfig, config_dir: Path, capsys: pytest.CaptureFixture[str],
    field: str, text_of: Callable[[Path], str], fix: str,
) -> None:
    write_secret(config_dir / "state-key")
    name = {"tenants[0].pbx.token_file": "pbx-token", "server.admin_token_file": "admin-token"}.get(field, "state-key")
    empty = config_dir / name
    empty.write_text("\n")  # what `install -m 0640 /dev/null FILE` and an editor's save leave
    empty.chmod(0o640)
    code, err = check_config(write_config(text_of(config_dir)), capsys)
    assert code == 2
    assert f"error: {field}: the file {empty} is empty; " in err and fix in err


async def test_an_empty_token_file_does_not_stop_the_daemon_but_parks_its_tenant(
    write_config: WriteConfig, config_dir: Path,
) -> None:
    (config_dir / "pbx-token").write_text("")
    service = Service(load_config(write_config(basic_config(server=REAL_HOST))), environ={}, schedule=False)
    with structlog.testing.capture_logs() as logs:
        await service.start()
    try:
        status = (await service.supervisor.tenant_statuses())[0]
        assert (status.ready, status.reason) == (False, "secret_file_unusable") and "is empty" in status.detail
        assert any(e.get("field") == "tenants[0].pbx.token_file" and e["log_level"] == "warning" for e in logs)
    finally:
        await service.stop()


def test_an_untouched_init_config_is_warned_about_and_strict_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "etc"
    assert main(["init", "--dir", str(folder), "--group", "no-such-group-m365"]) == 0
    write_secret(folder / "contoso-pbx-token")
    capsys.readouterr()
    code, err = check_config(folder / "config.toml", capsys)
    assert code == 0
    assert ("warning: tenants[0].directory_id: still the example value 72f988bf-86f1-41af-91ab-2d7cd011db47"
            in err) and "Directory (tenant) ID" in err
    assert "warning: server.public_url: https://pbx.example.com:8887 is the example's placeholder; replace it" in err
    code, err = check_config(folder / "config.toml", capsys, "--strict")
    assert code == 2 and "error: tenants[0].directory_id: still the example value" in err


def test_the_callback_url_as_public_url_is_an_error_giving_the_base(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str],
) -> None:
    pasted = 'public_url = "https://pbx.contoso.com:8887/api/auth/callback/ms365"'
    code, err = check_config(write_config(basic_config(server=pasted)), capsys)
    assert code == 2
    assert ('error: server.public_url: is a callback URL, not the base address: '
            'set public_url = "https://pbx.contoso.com:8887"') in err


def test_include_with_nobody_selected_is_an_error(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str],
) -> None:
    include = tenant_toml(users='sync_type = "INCLUDE"')
    code, err = check_config(write_config(basic_config(include, server=REAL_HOST)), capsys)
    assert code == 2
    assert 'error: tenants[0].users.sync_type: "INCLUDE" with no users.selected_users and no groups syncs nobody' in err
    assert "list users in users.selected_users or Entra group IDs in groups" in err
    with_group = tenant_toml(users='sync_type = "INCLUDE"', extra='groups = ["11111111-2222-3333-4444-555555555555"]')
    assert check_config(write_config(basic_config(with_group, server=REAL_HOST)), capsys)[0] == 0


def test_two_tenants_of_one_directory_in_one_pbx_is_an_error(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = check_config(write_config(basic_config(tenant_toml("a") + tenant_toml("b"), server=REAL_HOST)), capsys)
    assert code == 2
    assert "error: tenants[1].pbx.scim_url: tenants[0] already syncs directory" in err
    assert "compete for the same users and extension numbers" in err
    other_pbx = tenant_toml("b").replace("127.0.0.1:9/scim", "127.0.0.1:10/scim")
    assert check_config(write_config(basic_config(tenant_toml("a") + other_pbx, server=REAL_HOST)), capsys)[0] == 0


def test_a_state_folder_the_daemons_user_cannot_write_is_an_error(
    write_config: WriteConfig, config_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = config_dir / "state"
    folder.mkdir(mode=0o755)  # this user's, not the daemon's
    path = write_config(basic_config(server=REAL_HOST).replace('path = "state.db"', 'path = "state/state.db"'))
    nobody = Account("nobody", 65534, frozenset({65534}))
    assert [p.path for p in findings(load_config(path), nobody)] == ["state.path"]
    monkeypatch.setenv(accounts.USER_VARIABLE, "nobody")  # as the unit's User= would be
    code, err = check_config(path, capsys)
    assert code == 2
    assert f"error: state.path: the folder {folder} cannot be written by user nobody" in err
    assert f"run: chown nobody {folder}" in err
    folder.chmod(0o777)
    assert findings(load_config(path), nobody) == []


@pytest.mark.parametrize("command", [["status"], ["sync", "--once", "--dry-run"]])
def test_status_and_dry_run_explain_an_unreachable_state_as_run_does(
    write_config: WriteConfig, config_dir: Path, command: list[str],
) -> None:
    folder = config_dir / "state"
    folder.mkdir()
    path = write_config(basic_config(server=REAL_HOST).replace('path = "state.db"', 'path = "state/state.db"'))
    folder.chmod(0)
    # root passes every permission check: drop that power for the command, as an admin's shell lacks it
    without_override = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    result = subprocess.run([*without_override, sys.executable, "-m", "daemon.cli", *command, "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    folder.chmod(0o700)
    assert result.returncode == 1, result.stderr
    assert f"m365sync: error: cannot read state database {folder / 'state.db'}: Permission denied" in result.stderr
    assert "check [state] path and the directory's owner" in result.stderr and "internal error" not in result.stderr


def test_an_unquoted_leading_zero_gets_the_hint_at_its_field(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str],
) -> None:
    text = basic_config(tenant_toml("a") + tenant_toml("b", users="starting_extension_number = 0100"))
    code, err = check_config(write_config(text), capsys)
    assert code == 2 and "not valid TOML" in err
    assert ('tenants[1].users.starting_extension_number: a TOML number cannot start with 0; quote it: '
            'starting_extension_number = "0100" (though an extension number may not start with 0 either') in err


def test_one_permission_rule_for_every_secret_file_the_state_key_included(
    write_config: WriteConfig, config_dir: Path,
) -> None:
    rule = "0640 or stricter"
    assert rule in (REPO / "config.example.toml").read_text()
    assert rule in (REPO / "README.md").read_text()
    import daemon.secrets

    assert daemon.secrets.__doc__ is not None and rule in daemon.secrets.__doc__
    write_secret(config_dir / "state-key", mode=0o644)
    text = basic_config(server=REAL_HOST).replace('path = "state.db"', 'path = "state.db"\nencryption_key_file = "state-key"')
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(text))
    message = {p.path: p.message for p in caught.value.problems}["state.encryption_key_file"]
    assert "mode 0644" in message and rule in message
    write_secret(config_dir / "state-key", mode=0o640)  # root:m365sync 0640, as init and the README make them
    assert load_config(write_config(text)).warnings == ()


@pytest.mark.parametrize(
    ("extra", "sections", "field", "fix"),
    [
        ("", "[tenants.shared_mailbox]\nenabled = true\n", "tenants[0].shared_mailbox.enabled",
         'list them in shared_mailbox.mailboxes, or use auth_mode = "application"'),
        ("", "[tenants.personal_contacts]\nenabled = true\n", "tenants[0].personal_contacts.enabled",
         'to read every user\'s contacts, use auth_mode = "application"'),
        ("", "[tenants.events]\nenabled = true\n", "tenants[0].events.enabled",
         'to read every user\'s calendars, use auth_mode = "application"'),
    ],
)
def test_delegated_mode_is_warned_about_other_users_mailboxes(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str], extra: str, sections: str, field: str, fix: str,
) -> None:
    path = write_config(basic_config(tenant_toml(extra=extra) + sections, server=REAL_HOST))
    code, err = check_config(path, capsys)
    assert code == 0 and f"warning: {field}: delegated mode " in err and fix in err
    assert check_config(path, capsys, "--strict")[0] == 2
    application = tenant_toml(extra='auth_mode = "application"\nclient_secret_file = "pbx-token"') + sections
    assert check_config(write_config(basic_config(application, server=REAL_HOST)), capsys)[0] == 0


def test_listed_shared_mailboxes_need_no_detection(write_config: WriteConfig) -> None:
    sections = '[tenants.shared_mailbox]\nenabled = true\nmailboxes = ["reception@contoso.com"]\n'
    config = load_config(write_config(basic_config(tenant_toml() + sections, server=REAL_HOST)))
    assert findings(config) == []


def test_notifications_to_an_address_graph_cannot_reach_are_warned_about(write_config: WriteConfig) -> None:
    intranet = load_config(write_config(basic_config(tenant_toml(), server='public_url = "https://10.0.0.5:8887"')))
    (problem,) = findings(intranet)
    assert problem.path == "tenants[0].notifications.enabled" and problem.is_warning
    assert "/api/graph/" in problem.message and "notifications.enabled = false" in problem.message
    assert findings(load_config(write_config(basic_config(tenant_toml(), server=REAL_HOST)))) == []
    off = tenant_toml() + "[tenants.notifications]\nenabled = false\n"
    assert findings(load_config(write_config(basic_config(off, server='public_url = "https://10.0.0.5:8887"')))) == []
