"""`make demo`'s command on a fresh directory: the first sync, a scripted day
whose Sync now touches exactly the four scripted changes, then exit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_syncs_and_the_second_sync_touches_exactly_the_scripted_changes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "demo", "--exit", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    created = re.search(r"created\s+(\d+)", out)
    assert created and int(created.group(1)) > 100
    assert "skipped: guest account and users.sync_guest_users = false" in out
    assert re.search(r"extension range used\s+1001-\d+", out)
    second = out.split("Second sync", 1)[1]
    assert second.startswith(" (success): 3 write(s)")
    touched = [line.strip() for line in second.splitlines()[1:5]]
    assert [line.split()[0] for line in touched] == ["update", "create", "disable", "skipped"]
    assert "nadia.new@contoso.example" in touched[1] and "[active]" in touched[2] and "[displayName]" in touched[0]
    assert "gus_fabrikam.example#EXT#" in touched[3]
    assert "Status page: http://127.0.0.1:" in out and "/metrics" in out and "/readyz" in out
    assert "Traceback" not in result.stderr
    assert (tmp_path / "demo" / "state.db").stat().st_mode & 0o777 == 0o600
