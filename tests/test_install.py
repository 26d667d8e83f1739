"""contrib/install.sh, the README's production install, run into a throwaway
root: the same script .ci/run runs on the CI machine itself, up to
``check-config --strict`` as the daemon's user. It installs m365sync from this
checkout with pip (about a minute). It needs root (a system user,
root-owned files): skipped on a developer machine as another user, a failure
under CI."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, missing, require_tool, write_secret
from daemon.config import load_config

SCRIPT = REPO / "contrib" / "install.sh"
PUBLIC_URL = "https://pbx.m365sync-ci.internal:8887"


@pytest.fixture
def root() -> Iterator[Path]:
    """An empty root, 0755 like /: not under tmp_path, whose 0700 parents the daemon's user could not pass."""
    if os.geteuid() != 0:
        missing("contrib/install.sh needs root")
    for tool, package in (("systemd-sysusers", "systemd"), ("systemd-analyze", "systemd"), ("setpriv", "util-linux")):
        require_tool(tool, package)
    path = Path(tempfile.mkdtemp(prefix="m365sync-root-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, timeout=900
    )


def as_user(uid: int, gid: int, *command: str) -> int:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *command], capture_output=True
    ).returncode


def test_the_install_script_sets_up_a_host_up_to_check_config_as_the_daemon_user(root: Path, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    directory_id, application_id = str(uuid.uuid4()), str(uuid.uuid4())
    result = install(
        root,
        "--directory-id", directory_id,
        "--application-id", application_id,
        "--public-url", PUBLIC_URL,
        "--pbx-url", f"{PUBLIC_URL}/scim/v2",
        "--pbx-token-file", str(write_secret(tmp_path / "pbx-token", token)),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    user = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("m365sync:"))
    uid, gid = int(user[2]), int(user[3])
    assert uid != 0 and user[5:] == ["/var/lib/m365sync", "/usr/sbin/nologin"]
    etc = root / "etc/m365sync"
    assert (stat.S_IMODE(etc.stat().st_mode), etc.stat().st_uid, etc.stat().st_gid) == (0o750, 0, gid)
    for name in ("config.toml", "admin-token", "contoso-pbx-token"):
        info = (etc / name).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, gid), name
        assert as_user(uid, gid, "cat", str(etc / name)) == 0  # the daemon reads its secrets...
        assert as_user(uid, gid, "sh", "-c", f"echo x >> {etc / name}") != 0  # ...and cannot change them

    config = load_config(etc / "config.toml")
    tenant = config.tenants[0]
    assert (tenant.name, tenant.directory_id, tenant.application_id) == ("contoso", directory_id, application_id)
    assert config.server.public_url == PUBLIC_URL and tenant.pbx.scim_url == f"{PUBLIC_URL}/scim/v2"
    assert tenant.pbx.token_file.read_text().strip() == token and not config.warnings

    assert f"check-config --strict as the m365sync user (uid {uid})" in result.stdout
    assert "valid, 1 tenant(s)" in result.stdout and f"PBX: {PUBLIC_URL}/api/auth/callback/ms365" in result.stdout
    assert "systemd-analyze verify: clean" in result.stdout and "stopped before" in result.stdout
    unit = (root / "etc/systemd/system/m365sync.service").read_text()
    assert unit == (REPO / "contrib/systemd/m365sync.service").read_text()
    documentation = re.search(r"^Documentation=file://(/\S+)$", unit, re.MULTILINE)
    assert documentation and (root / documentation.group(1).lstrip("/")).read_text().startswith("# m365sync\n")
    assert os.readlink(root / "usr/local/bin/m365sync") == "/opt/m365sync/bin/m365sync"
    assert (root / "opt/m365sync/bin/m365sync").is_file()


def test_a_new_install_without_the_tenant_values_stops_before_changing_anything(root: Path) -> None:
    result = install(root, "--public-url", PUBLIC_URL)
    assert result.returncode == 1 and "--directory-id is needed" in result.stderr
    assert list(root.iterdir()) == []
