"""Configuration rules: every mistake located by its field path, all at once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO, basic_config, tenant_toml, write_secret
from daemon.cli import main
from daemon.config import load_config, read_secret
from daemon.errors import ConfigError

WriteConfig = Callable[[str], Path]


def problems_of(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return {p.path: p.message for p in caught.value.problems}


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.example.toml")
    assert [t.name for t in config.tenants] == ["contoso"]
    assert config.server.listen == "127.0.0.1:8790"


def test_check_config_on_example_exits_zero_with_a_line_per_tenant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", "--config", str(REPO / "config.example.toml")]) == 0
    out = capsys.readouterr().out
    assert "valid, 1 tenant(s)" in out
    assert "contoso: GLOBAL, delegated" in out


def test_defaults_are_the_pbx_pages_defaults(write_config: WriteConfig) -> None:
    text = """
[[tenants]]
name = "t"
directory_id = "11111111-2222-3333-4444-555555555555"
application_id = "66666666-7777-8888-9999-000000000000"
[tenants.pbx]
scim_url = "https://pbx.example.com/scim/v2"
token_file = "pbx-token"
"""
    config = load_config(write_config(text))
    tenant = config.tenants[0]
    assert config.server.listen == "127.0.0.1:8790"
    assert tenant.national_cloud == "GLOBAL"
    assert tenant.auth_mode == "delegated"
    assert tenant.sync_time == "0 */6 * * *"
    assert tenant.timezone == "UTC"
    assert tenant.groups == []
    assert not tenant.users.enabled and not tenant.users.sync_guest_users
    assert not tenant.users.sync_photo and tenant.users.sync_type == "ALL"
    assert not tenant.personal_contacts.enabled
    assert not tenant.shared_mailbox.enabled
    assert not tenant.events.enabled
    assert not tenant.sign_in_as_administrator.enabled
    assert not tenant.sign_in_as_standard_user.enabled
    assert tenant.sign_in_as_standard_user.sync_type == "ALL"
    assert config.log.format == "json" and config.log.level == "info"


def test_five_planted_mistakes_are_all_named(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = tenant_toml(
        extra='sync_time = "61 * * * *"\nsyncc_photo = true\ndirectory_id = "not-a-uuid"',
        users='sync_type = "SOME"\nstarting_extension_number = "0100"',
    )
    path = write_config(basic_config(tenant))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        'tenants[0].users.starting_extension_number: must be 3-13 digits '
        'without a leading zero (got "0100")'
    ) in err
    assert "tenants[0].directory_id: must be a UUID" in err
    assert "tenants[0].users.sync_type: must be one of 'ALL', 'INCLUDE' or 'EXCLUDE' (got \"SOME\")" in err
    assert "tenants[0].sync_time: must be a crontab expression" in err
    assert "tenants[0].syncc_photo: unknown key" in err
    assert len(err.strip().splitlines()) == 5


@pytest.mark.parametrize(
    ("extra", "users", "field", "message"),
    [
        ('national_cloud = "MARS"', "", "tenants[0].national_cloud", "must be one of 'GLOBAL', 'CHINA'"),
        ('application_id = 42', "", "tenants[0].application_id", "must be a string (got 42)"),
        ('auth_mode = "magic"', "", "tenants[0].auth_mode", "must be one of 'delegated' or 'application'"),
        ('sync_time = "*/5 * * * * *"', "", "tenants[0].sync_time", "5 fields"),
        ('timezone = "Mars/Olympus"', "", "tenants[0].timezone", "IANA time zone"),
        ('groups = ["abc"]', "", "tenants[0].groups[0]", "must be a UUID"),
        ('graph_url = "ftp://graph"', "", "tenants[0].graph_url", "absolute http(s) URL"),
        ('authority_url = "https://login.example/x"', "", "tenants[0].authority_url", "without a path"),
        ("", 'starting_extension_number = "12"', "tenants[0].users.starting_extension_number", "3-13 digits"),
        ("", 'starting_extension_number = "12345678901234"', "tenants[0].users.starting_extension_number", "3-13 digits"),
        ("", 'starting_extension_number = "10a1"', "tenants[0].users.starting_extension_number", "3-13 digits"),
        ("", 'last_extension_number = "1000"', "tenants[0].users.last_extension_number", "must not be below"),
        ("", 'selected_users = ["bob"]', "tenants[0].users.selected_users[0]", "userPrincipalName"),
        ("", "enabled = 1", "tenants[0].users.enabled", "must be true or false (got 1)"),
        ("", 'sync_guest_users = "yes"', "tenants[0].users.sync_guest_users", "true or false"),
        ("", "selected_users = \"a@b.com\"", "tenants[0].users.selected_users", "must be an array"),
        ('name = "Bad Name!"', "", "tenants[0].name", "lower-case letters"),
        ('client_secret_file = "pbx-token"', "", "tenants[0].client_secret_file", "AADSTS700025"),
        ('auth_mode = "application"', "", "tenants[0].auth_mode", "client_certificate_file"),
        (
            'auth_mode = "application"\nclient_certificate_file = "c.pem"',
            "",
            "tenants[0].client_private_key_file",
            "certificate/key pair",
        ),
    ],
)
def test_each_tenant_rule(
    write_config: WriteConfig, extra: str, users: str, field: str, message: str
) -> None:
    tenant = tenant_toml(extra=extra, users=users)
    problems = problems_of(write_config(basic_config(tenant)))
    assert field in problems, problems
    assert message in problems[field]


def test_users_enabled_needs_a_starting_number(write_config: WriteConfig) -> None:
    tenant = tenant_toml().replace('starting_extension_number = "1001"', "")
    assert "starting_extension_number" not in tenant
    problems = problems_of(write_config(basic_config(tenant)))
    assert "required when users.enabled = true" in problems["tenants[0].users.starting_extension_number"]


def test_integer_starting_number_is_accepted_as_digits(write_config: WriteConfig) -> None:
    tenant = tenant_toml(users="starting_extension_number = 2000")
    config = load_config(write_config(basic_config(tenant)))
    assert config.tenants[0].users.starting_extension_number == "2000"


@pytest.mark.parametrize(
    ("server", "field", "message"),
    [
        ('listen = "localhost"', "server.listen", "host:port"),
        ('listen = "[::1:8790"', "server.listen", "host:port"),
        ('public_url = "http://pbx.example.com:8887"', "server.public_url", "must use https"),
        ('sbc_public_url = "https://sbc.example.com/?x=1"', "server.sbc_public_url", "query"),
        ('admin_token_file = ""', "server.admin_token_file", "must not be empty"),
        ('lisen = "127.0.0.1:1"', "server.lisen", 'did you mean "listen"?'),
    ],
)
def test_server_rules(write_config: WriteConfig, server: str, field: str, message: str) -> None:
    text = basic_config(server=server)
    problems = problems_of(write_config(text))
    assert field in problems, problems
    assert message in problems[field]


def test_unknown_key_hint_inside_nested_table(write_config: WriteConfig) -> None:
    tenant = tenant_toml(users="sync_gest_users = true\n")
    problems = problems_of(write_config(basic_config(tenant)))
    assert problems["tenants[0].users.sync_gest_users"] == 'unknown key; did you mean "sync_guest_users"?'


def test_unknown_table_without_close_match(write_config: WriteConfig) -> None:
    problems = problems_of(write_config(basic_config() + "\n[zzz]\nx = 1\n"))
    assert problems["zzz"] == "unknown key"


def test_duplicate_tenant_names(write_config: WriteConfig) -> None:
    problems = problems_of(write_config(basic_config(tenant_toml("a") + tenant_toml("a"))))
    assert problems["tenants[1].name"] == 'duplicate tenant name "a" (also tenants[0])'


def test_problems_in_several_tenants_reported_together(write_config: WriteConfig) -> None:
    bad_a = tenant_toml("a", users='sync_type = "X"')
    bad_b = tenant_toml("b", users='starting_extension_number = "01"')
    problems = problems_of(write_config(basic_config(bad_a + bad_b)))
    assert set(problems) == {"tenants[0].users.sync_type", "tenants[1].users.starting_extension_number"}


def test_no_tenant_is_an_error(write_config: WriteConfig) -> None:
    problems = problems_of(write_config(basic_config(tenants="")))
    assert "tenants" in problems


def test_secret_file_readable_by_others_is_refused(
    write_config: WriteConfig, config_dir: Path
) -> None:
    write_secret(config_dir / "pbx-token", mode=0o644)
    problems = problems_of(write_config(basic_config()))
    assert "mode 0644" in problems["tenants[0].pbx.token_file"]
    assert "chmod 600" in problems["tenants[0].pbx.token_file"]


def test_secret_file_readable_by_group_is_allowed(
    write_config: WriteConfig, config_dir: Path
) -> None:
    write_secret(config_dir / "admin-token", mode=0o640)
    assert load_config(write_config(basic_config())).warnings == ()


def test_missing_secret_file_is_a_warning_and_strict_makes_it_an_error(
    write_config: WriteConfig, config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config_dir / "pbx-token").unlink()
    path = write_config(basic_config(server='public_url = "https://pbx.contoso.com:8887"'))  # not the placeholder
    config = load_config(path)
    assert [w.path for w in config.warnings] == ["tenants[0].pbx.token_file"]
    assert main(["check-config", "--config", str(path)]) == 0
    assert "warning: tenants[0].pbx.token_file" in capsys.readouterr().err
    assert main(["check-config", "--strict", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "error: tenants[0].pbx.token_file" in err and "warning:" not in err
    assert "invalid under --strict, 1 problem(s)" in err


def test_relative_paths_resolve_against_the_config_directory(
    write_config: WriteConfig, config_dir: Path
) -> None:
    config = load_config(write_config(basic_config()))
    assert config.state.path == config_dir / "state.db"
    assert config.tenants[0].pbx.token_file == config_dir / "pbx-token"


def test_urls_lose_their_trailing_slash(write_config: WriteConfig) -> None:
    text = basic_config().replace(
        'public_url = "https://pbx.example.com:8887"', 'public_url = "https://pbx.example.com:8887/"'
    )
    assert load_config(write_config(text)).server.public_url == "https://pbx.example.com:8887"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[server\nlisten=", "not valid TOML"),
        (b"\xff\xfe[server]", "not UTF-8"),
        (b'[server]\nlisten = 8790\n', "server.listen: must be a string (got 8790)"),
        (b"tenants = 3\n", "tenants: must be an array"),
        (b"server = []\n[[tenants]]\nname = 1\n", "server: must be a table"),
    ],
)
def test_bad_input_exits_2_without_traceback(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_directory_exit_2_without_traceback(tmp_path: Path) -> None:
    missing = run_cli("check-config", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    directory = run_cli("check-config", "--config", str(tmp_path))
    assert directory.returncode == 2 and "is a directory" in directory.stderr
    assert "Traceback" not in missing.stderr + directory.stderr


def test_unknown_tenant_lookup_names_the_known_ones(write_config: WriteConfig) -> None:
    config = load_config(write_config(basic_config()))
    with pytest.raises(ConfigError, match=r'no tenant named "x" \(known: contoso\)'):
        config.tenant("x")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_a_delegated_tenant_without_public_url_is_warned_about(write_config: WriteConfig) -> None:
    without = 'public_url = "https://pbx.example.com:8887"\n'
    assert without in basic_config()
    config = load_config(write_config(basic_config().replace(without, "")))
    warning = next(w for w in config.warnings if w.path == "server.public_url")
    assert "http://localhost:" in warning.message and "/api/auth/callback/ms365" in warning.message
    application = tenant_toml(extra='auth_mode = "application"\nclient_secret_file = "pbx-token"')
    config = load_config(write_config(basic_config(application).replace(without, "")))
    assert all(w.path != "server.public_url" for w in config.warnings)


def test_the_readmes_check_config_sample_is_what_the_program_prints(write_config: WriteConfig,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    readme = (REPO / "README.md").read_text()
    sample = readme.split("prints every problem at once, each with its field path, and exits 2:\n\n```\n", 1)[1]
    sample = sample.split("```", 1)[0]
    path = write_config(basic_config(tenant_toml(users='starting_extension_number = "0100"\nsyncc_photo = true')))
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == sample


def test_secrets_may_be_systemd_credentials(write_config: WriteConfig, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write_secret(credentials / "contoso-pbx", "pbx-from-systemd")
    write_secret(credentials / "admin", "admin-from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    text = basic_config(server='admin_token_file = "credential:admin"').replace(
        'token_file = "pbx-token"', 'token_file = "credential:contoso-pbx"')
    config = load_config(write_config(text))
    assert read_secret(config.tenants[0].pbx.token_file) == "pbx-from-systemd"
    assert config.server.admin_token_file is not None and read_secret(config.server.admin_token_file) == "admin-from-systemd"
    assert config.warnings == ()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    config = load_config(write_config(text))  # an admin's shell: the service's own credentials folder
    assert config.tenants[0].pbx.token_file == Path("/run/credentials/m365sync.service/contoso-pbx")
    bad = text.replace("credential:admin", "credential:../etc/shadow")
    with pytest.raises(ConfigError, match="credential:NAME needs the plain name"):
        load_config(write_config(bad))


def test_a_postgres_url_with_a_password_is_refused_without_echoing_it(write_config: WriteConfig) -> None:
    path = write_config(basic_config().replace('path = "state.db"',
                                               'url = "postgresql://m365sync:hunter2@db.example.com/m365sync"'))
    text = str(problems_of(path))
    assert "must not carry a password" in problems_of(path)["state.url"] and "hunter2" not in text
    path = write_config(basic_config().replace('path = "state.db"', 'url = "mysql://db/x"\nlease_seconds = 1'))
    found = problems_of(path)
    assert "must be a PostgreSQL URL" in found["state.url"] and "state.lease_seconds" in found
    path = write_config(basic_config().replace('path = "state.db"', 'url = "postgresql://m365sync@db/m365sync"'))
    assert load_config(path).state.shared
