"""`make demo`'s command on a fresh directory: the first sync, a scripted day
whose Sync now touches exactly the four scripted changes, then exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.demo import DEMO_MARK, default_demo_dir, fresh_demo_dir
from state.schema import bundled_migrations


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
    assert "Status page:" not in out  # with --exit the server stops: no dead addresses are printed
    assert "Traceback" not in result.stderr
    assert (tmp_path / "demo" / "state.db").stat().st_mode & 0o777 == 0o600


def test_the_built_wheel_runs_the_demo_and_hands_out_the_schemas_from_another_directory(tmp_path: Path) -> None:
    """The installed package, not the checkout: a wheel in a fresh venv, run elsewhere."""
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "wheel"),
                    str(repo)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("m365sync-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[demo]"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    m365sync = str(venv / "bin" / "m365sync")
    schemas = subprocess.run([m365sync, "pbx-schemas", "--out", "handed-out"], cwd=elsewhere, capture_output=True,
                             text=True, timeout=60)
    assert schemas.returncode == 0, schemas.stderr
    for name in ("schemas.json", "resource-types.json"):
        assert (elsewhere / "handed-out" / name).read_bytes() == (repo / "contrib" / "scim" / name).read_bytes()
    init = subprocess.run([m365sync, "init", "--dir", "etc"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0 and (elsewhere / "etc" / "config.toml").is_file(), init.stdout + init.stderr
    data_home = tmp_path / "data-home"
    demo = subprocess.run([m365sync, "demo", "--exit"], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XDG_DATA_HOME": str(data_home)})
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Second sync (success)" in demo.stdout and "Traceback" not in demo.stderr
    demo_dir = data_home / "m365sync" / "demo"  # like other tools' data, not the current directory
    assert f"Demo files (secrets included; removed at the next demo): {demo_dir}" in demo.stdout
    assert (demo_dir / "admin-token").is_file() and not (elsewhere / ".demo").exists()
    migrations = subprocess.run([str(venv / "bin" / "python"), "-c", "from state.schema import bundled_migrations as m; "
                                 "print([[(x.version, x.sql) for x in m(d)] for d in ('sqlite', 'postgresql')])"],
                                cwd=elsewhere, capture_output=True, text=True, timeout=60)
    checkout = [[(x.version, x.sql) for x in bundled_migrations(d)] for d in ("sqlite", "postgresql")]
    assert migrations.stdout.strip() == str(checkout)  # every file ships, portable and dialect parts alike
    copy = subprocess.run([m365sync, "state", "copy", "--from", f"sqlite:{demo_dir}/state.db", "--to", "copied.db"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert copy.returncode == 0 and "copied 1 tenant(s)" in copy.stdout, copy.stdout + copy.stderr


def test_the_demo_folder_is_the_xdg_data_folder_or_a_fresh_temporary_one(tmp_path: Path) -> None:
    assert default_demo_dir({"XDG_DATA_HOME": "/data", "HOME": "/home/a"}) == Path("/data/m365sync/demo")
    assert default_demo_dir({"XDG_DATA_HOME": "relative", "HOME": "/home/a"}) == Path(
        "/home/a/.local/share/m365sync/demo")
    homeless = default_demo_dir({"HOME": "/"})  # a service account, or run from /: never /.demo
    assert homeless.is_dir() and homeless.name.startswith("m365sync-demo-") and not any(homeless.iterdir())
    homeless.rmdir()


def test_the_demo_empties_only_a_folder_it_made(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    with pytest.raises(RuntimeError, match="not made by m365sync demo"):
        fresh_demo_dir(theirs)
    assert (theirs / "thesis.tex").read_text() == "years of work"

    ours = tmp_path / "ours"
    fresh_demo_dir(ours)
    (ours / "state.db").write_text("an earlier demo's world")
    fresh_demo_dir(ours)
    assert [p.name for p in ours.iterdir()] == [DEMO_MARK] and ours.stat().st_mode & 0o777 == 0o700
