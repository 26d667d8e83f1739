"""The shipped systemd unit: valid, hardened (exposure <= 2.0), notify-typed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, require_tool

UNIT = REPO / "contrib" / "systemd" / "m365sync.service"
MAX_EXPOSURE = 2.0


def test_exposure_is_at_most_2() -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for m365sync\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_verify_prints_nothing(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks ExecStart exists, so the installed
    console script stands in for /opt/m365sync/bin/m365sync; nothing else changes."""
    analyze = require_tool("systemd-analyze", "systemd")
    script = shutil.which("m365sync", path=str(Path(sys.executable).parent))
    assert script is not None
    unit = tmp_path / "m365sync.service"
    unit.write_text(UNIT.read_text().replace("/opt/m365sync/bin/m365sync", script))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_unit_declares_what_the_daemon_relies_on() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=m365sync",
        "ConfigurationDirectory=m365sync",
        "User=m365sync",
        "UMask=0077",
    ):
        assert re.search(rf"^{re.escape(line)}", text, re.MULTILINE), line
    assert "ExecStart=/opt/m365sync/bin/m365sync run --config /etc/m365sync/config.toml" in text
