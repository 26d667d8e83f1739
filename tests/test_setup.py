"""`m365sync init`: a configuration folder from the example, with a random
admin token, private files, and nothing overwritten."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import load_config


def test_init_writes_a_valid_config_and_a_random_admin_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "etc" / "m365sync"
    group = grp.getgrgid(os.getgid()).gr_name
    assert main(["init", "--dir", str(folder), "--group", group]) == 0
    out = capsys.readouterr().out
    assert "left to do" in out and "check-config" in out and "contoso-pbx-token" in out
    token = (folder / "admin-token").read_text().strip()
    assert len(token) >= 40
    for path in (folder / "config.toml", folder / "admin-token"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.stat().st_gid == os.getgid()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    config = load_config(folder / "config.toml")
    assert config.server.admin_token_file == folder / "admin-token"
    assert [w.path for w in config.warnings] == ["tenants[0].pbx.token_file"]  # the one secret left to write
    assert main(["check-config", "--config", str(folder / "config.toml")]) == 0
    assert main(["init", "--dir", str(folder), "--group", group]) == 1  # never overwrites
    assert "already exist" in capsys.readouterr().out and (folder / "admin-token").read_text().strip() == token
    other = tmp_path / "other"
    assert main(["init", "--dir", str(other), "--group", group]) == 0
    assert (other / "admin-token").read_text().strip() != token


def test_init_without_the_group_yet_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--dir", str(tmp_path / "etc"), "--group", "no-such-group-m365"]) == 0
    assert "no group 'no-such-group-m365' yet" in capsys.readouterr().out
