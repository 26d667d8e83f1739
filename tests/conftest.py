"""Shared fixtures: a valid configuration on disk, with private secret files."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import time
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Fixture modules shared by several test files.
pytest_plugins = ["graph_fixtures", "pbx_fixtures", "auth_fixtures", "sync_fixtures", "live_fixtures", "pg_fixtures",
                  "notify_fixtures"]

# The tests' state folders are this process's: check them as this user, whether or
# not the machine has the unit's m365sync account (an installed package creates it).
os.environ.setdefault("M365SYNC_USER", pwd.getpwuid(os.geteuid()).pw_name)

DIRECTORY_ID = "11111111-2222-3333-4444-555555555555"
APPLICATION_ID = "66666666-7777-8888-9999-000000000000"


def write_secret(path: Path, value: str = "s3cr3t-value", mode: int = 0o600) -> Path:
    path.write_text(value + "\n")
    os.chmod(path, mode)
    return path


def _merge(defaults: dict[str, str], lines: str) -> str:
    """TOML lines: ``defaults`` overridden (or extended) by ``key = value`` lines."""
    merged = dict(defaults)
    for line in lines.strip().splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            merged[key.strip()] = value.strip()
    return "\n".join(f"{key} = {value}" for key, value in merged.items())


def tenant_toml(name: str = "contoso", extra: str = "", users: str = "") -> str:
    """One [[tenants]] table; ``extra`` and ``users`` lines override its keys."""
    top = _merge(
        {
            "name": f'"{name}"',
            "directory_id": f'"{DIRECTORY_ID}"',
            "application_id": f'"{APPLICATION_ID}"',
        },
        extra,
    )
    user_lines = _merge({"enabled": "true", "starting_extension_number": '"1001"'}, users)
    return f"""
[[tenants]]
{top}

[tenants.pbx]
scim_url = "http://127.0.0.1:9/scim/v2"
token_file = "pbx-token"

[tenants.users]
{user_lines}
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    write_secret(tmp_path / "pbx-token")
    write_secret(tmp_path / "admin-token")
    return tmp_path


@pytest.fixture
def write_config(config_dir: Path) -> Callable[[str], Path]:
    """Write TOML text as config.toml beside the secret files; return its path."""

    def write(text: str) -> Path:
        path = config_dir / "config.toml"
        path.write_text(text)
        return path

    return write


def basic_config(tenants: str | None = None, server: str = "") -> str:
    """A whole valid config; ``server`` lines override or extend [server]."""
    server_lines = _merge(
        {
            "listen": '"127.0.0.1:0"',
            "public_url": '"https://pbx.example.com:8887"',
            "admin_token_file": '"admin-token"',
        },
        server,
    )
    return f"""
[server]
{server_lines}

[state]
path = "state.db"

[log]
format = "console"
{tenant_toml() if tenants is None else tenants}
"""


def require_tool(name: str, package: str) -> str:
    """The path of a system tool; skipped on a developer machine without it,
    a failure under CI (which installs it), so CI can never pass by skipping."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")  # nginx lives in sbin
    if path is None:
        missing(f"{name} is not installed (Debian package {package})")
    return path


def missing(message: str) -> typing.NoReturn:
    """A system tool is missing: a skip on a developer machine, a failure under CI (which installs it)."""
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run must install it")
    pytest.skip(message)


# A wait on real I/O (another process, a server, a daemon's tasks) ends as soon as what it waits for
# holds; its bound only ends a hang, so it is generous: a loaded machine (load 20 on 2 cores) may take
# ten times a quiet one's seconds. A promise about time is asserted on a clock or in lease rounds, never here.
HANG_GUARD = 120.0


async def until(condition: Callable[[], Awaitable[bool]], seconds: float, what: str) -> float:
    """Wait for a state of running daemons that nothing calls back for (lease rounds, other
    processes, on the real clock), looking every 0.1 s; returns when it held."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return time.monotonic()
