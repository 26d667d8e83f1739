"""Operator commands that work on the state database: sync once (or dry-run),
explain one user, approve held deprovisions.

What only one command needs (the status report, explain's scope rules, the
history view, the copy of a shared state) is imported by that command, so
``sync --once`` does not pay for it at start-up."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp

from daemon.auth.states import AuthStates
from daemon.auth.tokens import Tokens
from daemon.config import Config, TenantConfig, read_secret
from daemon.errors import ConfigError, ConfigProblem, StateError
from daemon.metrics import Metrics
from daemon.redact import redact_text, redact_value
from daemon.sealer import sealer_for
from daemon.sync.read_mailboxes import SHARED_DETECTION_FIX
from daemon.sync.report import describe_counts
from daemon.sync.runner import PHOTOS_SUFFIX, RunResult, TenantRunner
from state.db import Database
from state.open import open_database
from state.sqlite import state_access_error
from state.store import Store
from state.sync_store import SyncStore

RESULT_EXIT_CODES = {"success": 0, "deprovisions_held": 3}


@dataclass
class Stores:
    db: Database
    store: Store
    sync: SyncStore
    tokens: Tokens  # not the AuthManager: no command here runs the browser flow


@asynccontextmanager
async def open_stores(config: Config, metrics: Metrics, *, scratch_copy: bool = False,
                      read_only: bool = False) -> AsyncIterator[Stores]:
    """The state database, or (dry run) a throw-away copy of it so nothing changes.

    A shared PostgreSQL state is copied into a scratch SQLite file for a dry run
    (``state.copy``), so a dry run never writes to what other daemons use; a
    ``read_only`` reader (status) reads it where it is and registers nothing."""
    scratch: tempfile.TemporaryDirectory[str] | None = None
    target: Path | str = config.state.target
    direct_read = read_only and config.state.shared
    if scratch_copy and not direct_read:
        scratch = tempfile.TemporaryDirectory(prefix="m365sync-dry-run-")
        copy = Path(scratch.name) / "state.db"
        if config.state.shared:
            from state.copy import copy_database

            await copy_database(config.state.target, copy, password_file=config.state.password_file)
        elif _state_file_exists(config.state.path):
            _backup(config.state.path, copy)
        target = copy
    db = await open_database(target, password_file=config.state.password_file)  # used by PostgreSQL only
    try:
        store = Store(db)
        for tenant in config.tenants if not direct_read else ():
            await store.register_tenant(tenant.name, tenant.directory_id, tenant.application_id)
        try:
            sealer = sealer_for(config, create=not scratch_copy)  # a dry run or status never creates the key
        except PermissionError as err:  # the key file beside the database
            raise state_access_error(config.state.path, "read", err) from err
        tokens = Tokens(lambda: config, store, sealer, AuthStates(store, metrics))
        yield Stores(db, store, SyncStore(db, history_days=config.state.history_days), tokens)
    finally:
        await db.close()
        if scratch is not None:
            scratch.cleanup()


def _state_file_exists(path: Path) -> bool:
    """Whether there is a state to copy; a folder this user may not enter is said as ``run`` says it."""
    try:
        return path.exists()
    except PermissionError as err:
        raise state_access_error(path, "read", err) from err


def _backup(source: Path, target: Path) -> None:
    try:
        # Read-only. With no -wal file (the daemon is stopped, all is checkpointed)
        # also "immutable", so that no -wal/-shm file is created (owned by
        # whoever runs the command, which would lock the daemon's user out).
        live = Path(f"{source}-wal").exists()
        uri = f"{source.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
        with sqlite3.connect(uri, uri=True) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
    except sqlite3.Error as err:
        raise StateError(f"cannot copy {source} for a dry run: {err}") from err


def _tenants(config: Config, name: str | None) -> list[TenantConfig]:
    if name is not None:
        return [config.tenant(name)]
    return [t for t in config.tenants if t.enabled]


class ProgressPrinter:
    """A progress bar on a terminal, plain lines otherwise (journald, pipes)."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 2.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self._last = 0.0
        self._started = time.monotonic()

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last < self.interval and done != total:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-6)
        rate = done / elapsed
        if total:
            eta = (total - done) / rate if rate > 0 else 0
            text = f"{phase}: {done}/{total} ({rate:.0f}/s, ETA {eta:.0f}s)"
            if self.tty:
                filled = int(30 * done / total)
                text = f"\r{phase} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} ETA {eta:.0f}s"
        else:
            text = f"{phase}: {done} read ({rate:.0f}/s)"
            if self.tty:
                text = "\r" + text
        self.stream.write(text + ("" if self.tty else "\n"))
        self.stream.flush()


async def sync_once(config: Config, tenant_name: str | None, dry_run: bool, out: TextIO = sys.stdout,
                    photos: bool = False) -> int:
    """``m365sync sync --once [--dry-run]``: one run per tenant in the foreground."""
    metrics = Metrics(served=False)
    exit_code = 0
    async with open_stores(config, metrics, scratch_copy=dry_run) as stores, aiohttp.ClientSession() as session:
        for tenant in _tenants(config, tenant_name):
            runner = TenantRunner(tenant, stores.store, stores.sync, stores.tokens, session, metrics, dry_run=dry_run)
            trigger = ("cli-dry-run" if dry_run else "cli") + (PHOTOS_SUFFIX if photos else "")
            result = await runner.run(trigger, progress=ProgressPrinter())
            print_result(result, dry_run, out)
            exit_code = max(exit_code, RESULT_EXIT_CODES.get(result.result, 1))
    return exit_code


def print_result(result: RunResult, dry_run: bool, out: TextIO) -> None:
    report = result.report
    counts = describe_counts(report.counts_by_kind())
    heading = "dry run (nothing was changed)" if dry_run else "run"
    print(f"{result.tenant}: {heading} {result.run_id}: {result.result}; {counts}", file=out)
    if dry_run:
        for line in report.plan:
            print(f"  would {line}", file=out)
    for line in report.held:
        print(f"  held: {line}", file=out)
    for line in report.failures:
        print(f"  failed: {line}", file=out)
    for note in report.selects_nobody:
        print(f"  selects nobody: {note}", file=out)
    if report.groups.counts:
        groups = ", ".join(f"{k} {v}" for k, v in sorted(report.groups.counts.items()))
        print(f"  groups: {groups}", file=out)
    if report.contacts.counts:
        contacts = ", ".join(f"{k} {v}" for k, v in sorted(report.contacts.counts.items()))
        print(f"  contacts: {contacts}", file=out)
    for mailbox in report.contacts.unreadable:
        print(f"  mailbox not readable (403): {mailbox}", file=out)
    if report.contacts.settings_unreadable:
        print(f"  mailbox settings not readable (403) for {len(report.contacts.settings_unreadable)} mailbox(es), "
              f"so they are not known to be shared; {SHARED_DETECTION_FIX}", file=out)
    for group in report.groups.missing:
        print(f"  configured group does not exist in Entra ID: {group}", file=out)
    if report.error:
        print(f"  error: {redact_text(report.error)}", file=out)


async def explain_user(config: Config, tenant_name: str, reference: str, out: TextIO = sys.stdout) -> int:
    """``m365sync explain``: why a user is or is not synced, and what the PBX has."""
    from daemon.history_view import EXPLAIN_ENTRIES, history_lines
    from daemon.pbx.schema import PBX_USER
    from daemon.sync.plan_users import settings_fingerprint
    from daemon.sync.read_mailboxes import shared_detection_note
    from daemon.sync.scope import matches, sso_flags
    from daemon.sync.user_scope import decide_stored

    tenant = config.tenant(tenant_name)
    async with open_stores(config, Metrics(served=False)) as stores:
        copy = await stores.sync.find_user(tenant.name, reference)
        if copy is None:
            print(f"{reference}: no such user in the last Graph data of {tenant.name} "
                  "(not synced yet, or not in Entra ID)", file=out)
            rejected = await stores.sync.synced(tenant.name, "user", reference)  # refused at the read: by id
            if rejected is not None and rejected.last_error:
                print(f"last error ({rejected.failures} in a row): {rejected.last_error}", file=out)
            return 1
        decision = await decide_stored(tenant, stores.sync, copy)
        synced = await stores.sync.synced(tenant.name, "user", copy.id)
        admin, standard = sso_flags(copy.data, tenant)
        print(f"user: {copy.data.get('userPrincipalName')} ({copy.id})", file=out)
        state = "in scope" if decision.in_scope else "out of scope"
        print(f"scope: {state}; active on the PBX: {'yes' if decision.active else 'no'}", file=out)
        print(f"rule: {decision.rule}", file=out)
        if not tenant.users.enabled:
            print("note: users.enabled = false, so no user is created, changed or removed", file=out)
        selected = matches(copy.data, tenant.users.selected_users)
        print(f"selected_users entry: {selected or 'none'}", file=out)
        print(f"sign-in flags: administrator {'yes' if admin else 'no'}, standard user {'yes' if standard else 'no'}", file=out)
        if synced is None or synced.pbx_id is None:
            print("PBX: not created", file=out)
        else:
            number = (synced.payload or {}).get(PBX_USER, {}).get("extensionNumber")
            pushed = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(synced.last_push_at)) if synced.last_push_at else "never"
            print(f"PBX: id {synced.pbx_id}, extension {number}, last push {pushed}", file=out)
        if synced is not None and synced.last_error:
            print(f"last error ({synced.failures} in a row): {redact_text(synced.last_error)}", file=out)
            if synced.retry_at and not synced.quarantine_fingerprint:
                retry = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(synced.retry_at))
                print(f"next try: after {retry}, or at the first run after the user changes", file=out)
        if synced is not None and synced.quarantine_fingerprint:
            print("quarantined: not retried until the user's Graph data or the settings change", file=out)
        held = (await stores.sync.held(tenant.name)).get(copy.id)
        if held:
            print(f"held by the mass-deletion guard: {held[1]} (approve with: m365sync approve --tenant {tenant.name})", file=out)
        note = await shared_detection_note(tenant, stores.sync, copy.id)
        if note:
            print(note, file=out)
        print(f"settings fingerprint: {settings_fingerprint(tenant)}", file=out)
        last = await stores.store.last_run(tenant.name)
        for note in (last.summary.get("selects_nobody", []) if last is not None else []):
            print(f"tenant setting that selects nobody (last run): {note}", file=out)
        written = await stores.sync.history(tenant.name, "user", copy.id, EXPLAIN_ENTRIES)
        print(f"history (last {EXPLAIN_ENTRIES}; all: m365sync history --tenant {tenant.name} {reference}):"
              + ("" if written else " no writes recorded"), file=out)
        for line in history_lines(written):
            print(f"  {line}", file=out)
    return 0


async def history(config: Config, tenant_name: str, reference: str, out: TextIO = sys.stdout) -> int:
    """``m365sync history``: every write to one user or group, oldest first, kept for [state] history_days."""
    from daemon.history_view import history_lines, object_history

    tenant = config.tenant(tenant_name)
    async with open_stores(config, Metrics(served=False)) as stores:
        found = await object_history(stores.sync, tenant.name, reference)
    if found is None:
        print(f"{reference}: no such user or group, and nothing written under that name in {tenant.name}", file=out)
        return 1
    print(f"{found.kind} {found.label} ({found.graph_id}): {len(found.entries)} write(s) in the last "
          f"{config.state.history_days} days", file=out)
    for line in history_lines(found.entries):
        print(f"  {line}", file=out)
    return 0


async def approve(config: Config, tenant_name: str, out: TextIO = sys.stdout) -> int:
    """``m365sync approve``: release exactly the held deprovisions on the next run."""
    tenant = config.tenant(tenant_name)
    async with open_stores(config, Metrics(served=False)) as stores:
        count = await stores.sync.approve_held(tenant.name)
    if count:
        print(f"{tenant.name}: {count} held deprovision(s) approved; they are applied on the next run", file=out)
    else:
        print(f"{tenant.name}: nothing is held", file=out)
    return 0


async def status(config: Config, as_json: bool, out: TextIO = sys.stdout) -> int:
    """``m365sync status``: read the state database (works while the daemon runs).

    It reads a copy: the real file is neither created (before the daemon's
    first start) nor migrated nor written, whoever runs the command. A shared
    PostgreSQL state is read where it is, and nothing is registered."""
    from daemon import status as status_module

    async with open_stores(config, Metrics(served=False), scratch_copy=True, read_only=True) as stores:
        reports = await status_module.collect(config, stores.store, stores.sync)
    if as_json:
        print(json.dumps(redact_value(status_module.as_json(reports)), indent=2), file=out)
    else:
        print(redact_text(status_module.as_text(reports)), file=out)
    return 0


SYNC_NOW_POLL_SECONDS = 1.0


async def sync_now(config: Config, tenant_name: str, wait: bool, out: TextIO = sys.stdout, photos: bool = False) -> int:
    """``m365sync sync-now``: POST /api/tenants/T/sync on the running daemon."""
    tenant = config.tenant(tenant_name)
    if config.server.admin_token_file is None:
        raise ConfigError([ConfigProblem("server.admin_token_file", "required to call the daemon's admin API")])
    headers = {"Authorization": f"Bearer {read_secret(config.server.admin_token_file)}"}
    host = config.server.host if config.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    base = f"http://{'[' + host + ']' if ':' in host else host}:{config.server.port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            params = {"photos": "1"} if photos else {}
            async with session.post(f"{base}/api/tenants/{tenant.name}/sync", headers=headers, params=params) as response:
                body = await response.json(content_type=None)
                if response.status != 202:
                    print(f"m365sync: error: the daemon answered {response.status}: {body.get('error')}", file=sys.stderr)
                    return 1
            run_id = body["run_id"]
            print(f"{tenant.name}: sync requested, run {run_id}", file=out)
            while wait:
                async with session.get(f"{base}/api/tenants/{tenant.name}/runs/{run_id}", headers=headers) as response:
                    run = await response.json(content_type=None)
                if run.get("state") == "finished":
                    counts = describe_counts(run.get("counts") or {})
                    print(f"{tenant.name}: run {run_id}: {run.get('result')}; {counts}", file=out)
                    return RESULT_EXIT_CODES.get(str(run.get("result")), 1)
                await asyncio.sleep(SYNC_NOW_POLL_SECONDS)
    except (TimeoutError, aiohttp.ClientError) as err:
        print(f"m365sync: error: cannot reach the daemon at {base}: {err}", file=sys.stderr)
        return 1
    return 0
