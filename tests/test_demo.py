"""`make demo`'s command on the example config: it serves /healthz and waits
for authorization, and says plainly that it does not sync yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_demo_serves_healthz_and_waits_for_authorization(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "daemon.cli", "demo", "--exit",
            "--config", str(REPO / "config.example.toml"),
            "--dir", str(tmp_path / "demo"),
            "--listen", "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "GET /healthz -> 200" in result.stdout
    assert "GET /readyz -> 503" in result.stdout
    assert "tenant contoso: authorization_required" in result.stdout
    assert "nothing is sent to any PBX" in result.stdout
    assert (tmp_path / "demo" / "state.db").stat().st_mode & 0o777 == 0o600
    assert "Traceback" not in result.stderr
