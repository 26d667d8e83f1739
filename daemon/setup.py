"""``m365sync init``: the configuration folder a new install starts from.

It writes ``config.toml`` from the shipped example (pointing at files in the
same folder) and an ``admin-token`` of 32 random bytes, both ``0640`` and
owned by root and the daemon's group (``m365sync``, created by the unit's
sysusers file) so the daemon can read them and nobody else can. Nothing that
exists is overwritten. It then says what is left to fill in.
"""

from __future__ import annotations

import grp
import os
import secrets
from importlib import resources
from pathlib import Path
from typing import TextIO

SECRET_MODE = 0o640
DIR_MODE = 0o750


def example_config() -> str:
    return resources.files("daemon").joinpath("config.example.toml").read_text("utf-8")


def init_config_dir(folder: Path, group: str, out: TextIO) -> int:
    """Create ``folder`` with a config and an admin token; 0 when done, 1 when it would overwrite."""
    config, token = folder / "config.toml", folder / "admin-token"
    existing = [p for p in (config, token) if p.exists()]
    if existing:
        print(f"m365sync: error: {', '.join(map(str, existing))} already exist(s); nothing was changed", file=out)
        return 1
    gid = _gid(group, out)
    folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _own(folder, gid, DIR_MODE)
    text = example_config().replace('"/etc/m365sync/', f'"{folder.absolute()}/')
    _write_private(config, text, gid)
    _write_private(token, secrets.token_urlsafe(32) + "\n", gid)
    pbx_token = folder / "contoso-pbx-token"
    print(f"created {config} and {token} (mode 0640{', group ' + group if gid is not None else ''})", file=out)
    print("left to do:", file=out)
    print(f"  1. in {config}: public_url (the address admins open), and per tenant its name, directory_id,", file=out)
    print("     application_id, auth_mode and pbx.scim_url (every value marked 'example')", file=out)
    print(f"  2. the PBX's SCIM token (from the PBX portal's Microsoft 365 page) into {pbx_token}, mode 0640", file=out)
    print(f"  3. m365sync check-config --config {config}", file=out)
    return 0


def _gid(group: str, out: TextIO) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        print(f"note: no group {group!r} yet (systemd-sysusers creates it); files are left to this user's group", file=out)
        return None


def _own(path: Path, gid: int | None, mode: int) -> None:
    if gid is not None:
        os.chown(path, -1, gid)
    path.chmod(mode)


def _write_private(path: Path, text: str, gid: int | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    _own(path, gid, SECRET_MODE)
