"""`m365sync sync --once`, `--dry-run`, `explain` and `approve` as real processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from live_fixtures import LiveEnv, started_live_env
from sim.generator import generate_tenant
from sim.pbx import ScimServer


def state_rows(env: LiveEnv) -> dict[str, int]:
    path = env.tmp_path / "state.db"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("graph_objects", "synced_objects", "delta_links", "extension_allocations")}


async def test_sync_once_then_dry_run_changes_nothing(live_env: LiveEnv) -> None:
    made = generate_tenant(live_env.tenant, users=30, photo_fraction=0)
    code, out, err = await live_env.sync()
    assert code == 0, out + err
    assert f"create {len(made.members)}" in out
    assert set(await live_env.pbx_users()) == set(made.members)
    live_env.tenant.change_user(made.members[0], displayName="Renamed By HR")
    live_env.tenant.hard_delete_user(made.members[1])
    before_rows, before_writes = state_rows(live_env), live_env.proxy.writes
    code, out, err = await live_env.m365sync("sync", "--once", "--dry-run")
    assert code == 0, out + err
    assert "dry run (nothing was changed)" in out
    assert "would update user" in out and "would delete user" in out
    assert live_env.proxy.writes == before_writes
    assert state_rows(live_env) == before_rows
    code, out, _ = await live_env.sync()
    assert "delete 1" in out and "update 1" in out


async def test_explain_and_approve(live_env: LiveEnv) -> None:
    made = generate_tenant(live_env.tenant, users=60, photo_fraction=0)
    assert made.guests
    await live_env.sync()
    member = made.members[0]
    upn = live_env.tenant.users.records[member].data["userPrincipalName"]
    code, out, _ = await live_env.m365sync("explain", "--tenant", "contoso", upn.upper())
    assert code == 0
    assert "scope: in scope; active on the PBX: yes" in out and "rule: ALL: every user" in out
    assert "extension 10" in out
    guest = made.guests[0]
    code, out, _ = await live_env.m365sync("explain", "--tenant", "contoso", guest)
    assert "guest account and users.sync_guest_users = false" in out and "PBX: not created" in out
    if made.disabled:  # the reason first, then the rule that put them in scope
        code, out, _ = await live_env.m365sync("explain", "--tenant", "contoso", made.disabled[0])
        assert "rule: account disabled in Entra ID (in scope by ALL: every user)" in out
    code, out, _ = await live_env.m365sync("explain", "--tenant", "contoso", "nobody@contoso.example")
    assert code == 1 and "no such user" in out
    for user in made.members:
        live_env.tenant.hard_delete_user(user)
    code, out, _ = await live_env.sync()
    assert code == 3 and "deprovisions_held" in out  # all of them at once is more than 20
    code, out, _ = await live_env.m365sync("approve", "--tenant", "contoso")
    assert f"{len(made.members)} held deprovision(s) approved" in out
    code, out, _ = await live_env.sync()
    assert code == 0 and f"delete {len(made.members)}" in out
    assert await live_env.pbx_users() == {}


async def test_a_second_process_cannot_sync_a_tenant_that_is_being_synced(live_env: LiveEnv) -> None:
    import os
    import socket

    from daemon.config import load_config
    from daemon.sync.runner import _process_alive
    from state.backends import open_database
    from state.sync_store import SyncStore

    generate_tenant(live_env.tenant, users=10, photo_fraction=0)
    await live_env.sync()  # creates the state database
    config = load_config(live_env.config)
    db = await open_database(config.state.path)
    try:
        store = SyncStore(db)
        holder = f"pid {os.getpid()} on {socket.gethostname()}"  # this test process, alive
        assert await store.try_lock("contoso", holder, 3600, _process_alive) is None
        code, out, _ = await live_env.sync()
        assert code == 1 and "busy" in out and "is syncing tenant contoso" in out
        await store.unlock("contoso", holder)
        dead = f"pid 999999 on {socket.gethostname()}"  # a crashed process
        assert await store.try_lock("contoso", dead, 3600, lambda h: True) is None
    finally:
        await db.close()
    code, out, _ = await live_env.sync()
    assert code == 0 and "success" in out  # the dead holder's lock is taken over


async def test_settings_that_select_nobody_show_in_sync_status_and_explain(tmp_path: Path,
                                                                           scim_server_one_by_one: ScimServer) -> None:
    sections = '\n[tenants.sign_in_as_administrator]\nenabled = true\nselected_users = ["boss@contoso.example"]\n'
    async with started_live_env(tmp_path, scim_server_one_by_one, tenant_sections=sections) as env:
        made = generate_tenant(env.tenant, users=5, photo_fraction=0)
        note = "sign_in_as_administrator.selected_users entry 'boss@contoso.example' matches no user"
        code, out, _ = await env.sync()
        assert code == 0 and f"selects nobody: {note}" in out
        code, out, _ = await env.m365sync("status")
        assert f"selects nobody: {note}" in out
        upn = env.tenant.users.records[made.members[0]].data["userPrincipalName"]
        code, out, _ = await env.m365sync("explain", "--tenant", "contoso", upn)
        assert code == 0 and note in out


async def test_status_creates_and_writes_nothing(live_env: LiveEnv) -> None:
    state = live_env.tmp_path / "state.db"
    code, out, err = await live_env.m365sync("status")
    assert code == 0 and "contoso" in out and "last run: never" in out, out + err
    assert not state.exists()  # no database before the daemon's first start
    generate_tenant(live_env.tenant, users=3, photo_fraction=0)
    await live_env.sync()
    files = {p.name: p.stat().st_mtime_ns for p in live_env.tmp_path.glob("state.db*")}
    code, out, _ = await live_env.m365sync("status", "--json")
    assert code == 0 and '"result": "success"' in out
    assert {p.name: p.stat().st_mtime_ns for p in live_env.tmp_path.glob("state.db*")} == files


async def test_application_mode_gets_a_new_token_when_graph_refuses_the_cached_one(live_env: LiveEnv) -> None:
    generate_tenant(live_env.tenant, users=3, photo_fraction=0)
    code, out, _ = await live_env.sync()
    assert code == 0 and "success" in out
    live_env.idp.issued_access_tokens.clear()  # Graph no longer accepts the token in the cache
    code, out, err = await live_env.sync()
    assert code == 0 and "success" in out, out + err
    code, out, _ = await live_env.m365sync("status")
    assert "authorization: authorized" in out


async def test_tokens_are_sealed_at_rest_by_default(live_env: LiveEnv) -> None:
    generate_tenant(live_env.tenant, users=2, photo_fraction=0)
    code, _, _ = await live_env.sync()
    assert code == 0
    key = live_env.tmp_path / "state.db.key"
    assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(live_env.tmp_path / "state.db") as db:
        (cache,) = db.execute("SELECT cache FROM token_cache").fetchone()
    assert bytes(cache).startswith(b"fernet:") and b"access_token" not in bytes(cache).lower()
    assert not any(token.encode() in bytes(cache) for token in live_env.idp.issued_access_tokens)


async def test_a_reader_that_goes_away_is_no_traceback(live_env: LiveEnv) -> None:
    import subprocess
    import sys

    err = live_env.tmp_path / "stderr.txt"
    command = (f"{sys.executable} -m daemon.cli status --json --config {live_env.config} 2>{err} | head -c 10; "
               "exit ${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert len(result.stdout) == 10
    assert "Traceback" not in err.read_text() and "BrokenPipe" not in err.read_text()
    assert result.returncode in (0, 141)  # quietly, as other Unix tools stop


async def test_on_a_shared_postgres_state_dry_run_and_status_write_nothing(tmp_path: Path,
                                                                           scim_server_one_by_one: ScimServer,
                                                                           pg_url: str) -> None:
    from conftest import write_secret
    from state.backends import open_database

    async def rows() -> dict[str, int]:
        db = await open_database(pg_url)
        try:
            return {t: (await db.fetchone(f"SELECT count(*) FROM {t}") or (0,))[0]
                    for t in ("tenants", "graph_objects", "synced_objects", "runs", "delta_links")}
        finally:
            await db.close()

    async with started_live_env(tmp_path, scim_server_one_by_one) as env:
        write_secret(tmp_path / "state-key", "the-key-every-daemon-of-this-state-shares-01234")
        env.config.write_text(env.config.read_text().replace(
            'path = "state.db"', f'url = "{pg_url}"\nencryption_key_file = "state-key"'))
        made = generate_tenant(env.tenant, users=20, photo_fraction=0)
        code, out, err = await env.sync()
        assert code == 0 and f"create {len(made.members)}" in out, out + err
        assert not (tmp_path / "state.db").exists()  # the state is in PostgreSQL
        env.tenant.change_user(made.members[0], displayName="Renamed By HR")
        before, writes = await rows(), env.proxy.writes
        code, out, err = await env.m365sync("sync", "--once", "--dry-run")
        assert code == 0 and "would update user" in out, out + err
        code, out, err = await env.m365sync("status")
        assert code == 0 and "contoso" in out and "last run:" in out, out + err
        assert await rows() == before and env.proxy.writes == writes
