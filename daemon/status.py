"""What an operator asks first: per tenant, authorization, last run, next run,
held deprovisions and quarantined objects. One collector, three renderings:
``m365sync status`` (text), ``GET /api/status`` (JSON) and ``/`` (HTML)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from daemon.auth.explain import redirect_uris
from daemon.auth.manager import START_PATH
from daemon.config import Config, TenantConfig
from daemon.health import TenantStatus, tenant_status
from daemon.notify.mode import freshness
from daemon.secrets import is_empty_secret, secret_file_problem
from daemon.sync.presence import presence_denied
from daemon.sync.read_mailboxes import SHARED_DETECTION_FIX, unreadable_settings
from daemon.sync.report import describe_counts
from state.notify_store import NotifyStore
from state.store import RunRow, Store
from state.sync_store import SyncStore

NEXT_RUN_KEY = "next_run"
HISTORY_RUNS = 10
SYNCED_KINDS = ("user", "group", "contact")


@dataclass
class TenantReport:
    tenant: str
    enabled: bool
    auth_state: str
    auth_owner: str | None
    auth_reason: str | None
    last_run: dict[str, Any] | None
    next_run: float | None
    held: list[dict[str, str]] = field(default_factory=list)
    quarantined: list[dict[str, str | None]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # failed objects not quarantined: retried later
    unreadable_calendars: list[str] = field(default_factory=list)
    unreadable_mailboxes: list[str] = field(default_factory=list)
    unreadable_mailbox_settings: list[str] = field(default_factory=list)  # 403: not known to be shared
    shared_detection_fix: str | None = None  # what to do about them
    selects_nobody: list[str] = field(default_factory=list)  # from the last run: settings that match no one
    leftover: bool = False  # no longer in the configuration; its state stays until disconnected
    owner: str | None = None  # the daemon syncing it (a shared state: the lease holder; None: nobody now)
    # What /readyz says, and the one command that fixes it (None when ready).
    ready: bool = False
    ready_reason: str = ""
    ready_detail: str = ""
    fix: str | None = None
    last_success: float | None = None
    failures: list[str] = field(default_factory=list)  # objects the last run could not write
    synced: dict[str, int] = field(default_factory=dict)  # objects the daemon has pushed, per kind
    schedule: str = ""  # the crontab and the zone it runs in
    timezone: str = "UTC"
    cloud: str = ""
    features: list[str] = field(default_factory=list)
    redirect_uris: list[tuple[str, str]] = field(default_factory=list)  # label, URI: guide step 5
    authorize_url: str = ""  # guide step 8, for an admin signed in to the status page
    runs: list[dict[str, Any]] = field(default_factory=list)  # the last runs, newest first
    freshness: dict[str, Any] = field(default_factory=dict)  # push | poll | schedule, why, the last notification
    presence_denied: dict[str, Any] | None = None  # since when and why Graph refuses presence (403)


async def collect(config: Config, store: Store, sync_store: SyncStore, next_runs: dict[str, float] | None = None,
                  owners: Mapping[str, str] | None = None) -> list[TenantReport]:
    """Every tenant's report; ``owners`` (tenant -> daemon) from the daemon, none from the CLI."""
    rows = {row.name: row for row in await store.tenants()}
    reports = []
    for tenant in config.tenants:
        row = rows.get(tenant.name)
        recent = await store.recent_runs(tenant.name, HISTORY_RUNS)
        run = recent[0] if recent else None
        last = _run_json(run) if run is not None else None
        successes = await store.recent_runs(tenant.name, 1, result="success")
        next_run = (next_runs or {}).get(tenant.name)
        if next_run is None:
            next_run = await sync_store.timestamp(tenant.name, NEXT_RUN_KEY)
        held = await sync_store.held(tenant.name)
        names = {}
        for graph_id, (kind, _, _) in held.items():
            copy = await sync_store.graph_copy(tenant.name, kind, graph_id)
            names[graph_id] = _name(copy.data, graph_id) if copy else graph_id
        quarantined = []
        for kind, graph_id, error in await sync_store.quarantined(tenant.name):
            copy = await sync_store.graph_copy(tenant.name, kind, graph_id)
            quarantined.append({"kind": kind, "id": graph_id, "name": _name(copy.data, graph_id) if copy else graph_id,
                                "error": error})
        failed = []
        for kind, graph_id, failures, error, retry_at in await sync_store.failing(tenant.name):
            copy = await sync_store.graph_copy(tenant.name, kind, graph_id)
            failed.append({"kind": kind, "id": graph_id, "name": _name(copy.data, graph_id) if copy else graph_id,
                           "failures": failures, "error": error, "retry_at": retry_at})
        unreadable: dict[str, list[str]] = {}
        for key, resource in (("calendars", "calendar"), ("mailboxes", "contacts")):
            user_ids = await sync_store.unreadable(tenant.name, resource)
            copies = await sync_store.graph_copies(tenant.name, "user", user_ids)
            unreadable[key] = [_name(copies[u].data, u) if u in copies else u for u in user_ids]
        settings = await unreadable_settings(sync_store, tenant.name) if tenant.shared_mailbox.enabled else []
        reports.append(TenantReport(
            tenant=tenant.name, enabled=tenant.enabled,
            auth_state=row.auth_state if row else "authorization_required",
            auth_owner=row.auth_owner if row else None, auth_reason=row.auth_reason if row else None,
            last_run=last, next_run=next_run,
            held=sorted(({"id": i, "kind": kind, "name": names[i], "action": action, "approved": str(approved).lower()}
                         for i, (kind, action, approved) in held.items()), key=lambda h: (h["kind"], h["name"])),
            quarantined=quarantined, failed=failed,
            unreadable_calendars=unreadable["calendars"],
            unreadable_mailboxes=unreadable["mailboxes"],
            unreadable_mailbox_settings=settings, shared_detection_fix=SHARED_DETECTION_FIX if settings else None,
            selects_nobody=list(run.summary.get("selects_nobody", [])) if run is not None else [],
            owner=(owners or {}).get(tenant.name),
            **_readiness(tenant_status(tenant, row, str(config.source)), tenant, str(config.source)),
            last_success=successes[0].started_at if successes else None,
            failures=list(run.summary.get("failures", [])) if run is not None else [],
            synced={kind: await sync_store.count_synced(tenant.name, kind) for kind in SYNCED_KINDS},
            schedule=f"{tenant.sync_time} ({tenant.timezone})", timezone=tenant.timezone, cloud=tenant.national_cloud,
            features=features(tenant), redirect_uris=redirect_uris(config.server),
            authorize_url=authorize_url(tenant.name), runs=[_run_json(r) for r in recent],
            freshness=(await freshness(config, tenant, NotifyStore(store.db, store.clock))).as_json(),
            presence_denied=await presence_denied(sync_store, tenant.name) if tenant.presence.enabled else None,
        ))
    configured = {t.name for t in config.tenants}
    for name, row in sorted(rows.items()):
        if name not in configured:
            reports.append(TenantReport(tenant=name, enabled=False, auth_state=row.auth_state, auth_owner=row.auth_owner,
                                        auth_reason=row.auth_reason, last_run=None, next_run=None, leftover=True))
    return reports


def _run_json(run: RunRow) -> dict[str, Any]:
    return {"id": run.id, "trigger": run.trigger, "started_at": run.started_at,
            "duration_seconds": round(run.finished_at - run.started_at, 2) if run.finished_at else None,
            "result": run.result or "running", "counts": run.summary.get("counts", {}), "error": run.error}


def _readiness(readiness: TenantStatus, tenant: TenantConfig, config_file: str) -> dict[str, Any]:
    """``/readyz``'s answer for the tenant, plus the command that fixes it."""
    return {"ready": readiness.ready, "ready_reason": readiness.reason, "ready_detail": readiness.detail,
            "fix": fix_command(readiness, tenant, config_file)}


def fix_command(readiness: TenantStatus, tenant: TenantConfig, config_file: str) -> str | None:
    """The command an admin runs next; the same order of reasons as ``/readyz``."""
    if readiness.ready:
        return None
    if readiness.reason == "disabled":
        return f"set enabled = true for {tenant.name} in {config_file}, then: systemctl reload m365sync"
    if readiness.reason == "secret_file_unusable":
        for path in tenant.secret_files().values():
            problem = secret_file_problem(path)
            if problem is not None and "has mode" in problem[0]:
                return f"chmod 640 {path}"
            if problem is not None or is_empty_secret(path):
                return (f"install -m 640 -g m365sync /dev/stdin {path}  (paste the secret, then Ctrl-D); "
                        f"then: m365sync check-config --config {config_file}")
        return f"m365sync check-config --config {config_file}"
    return f"m365sync authorize --config {config_file} --tenant {tenant.name}"


def features(tenant: TenantConfig) -> list[str]:
    """What the tenant syncs, as the config names it."""
    named = {"users": tenant.users.enabled, "users.sync_photo": tenant.users.enabled and tenant.users.sync_photo,
             "groups": bool(tenant.groups), "personal_contacts": tenant.personal_contacts.enabled,
             "shared_mailbox": tenant.shared_mailbox.enabled, "events": tenant.events.enabled,
             "sign_in_as_administrator": tenant.sign_in_as_administrator.enabled,
             "sign_in_as_standard_user": tenant.sign_in_as_standard_user.enabled}
    return [name for name, on in named.items() if on]


def authorize_url(tenant: str) -> str:
    """The start page, on the status page's own origin: the browser sends it the admin's
    Basic login there (not to ``public_url``), so no one-time link is needed."""
    return f"{START_PATH}?{urlencode({'tenant': tenant})}"


def as_json(reports: list[TenantReport]) -> dict[str, Any]:
    return {"tenants": [asdict(r) for r in reports]}


def _when(moment: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment)) if moment else "-"


def as_text(reports: list[TenantReport]) -> str:
    lines = []
    for r in reports:
        if r.leftover:
            lines.append(f"{r.tenant} (not in the configuration; its state stays until: "
                         f"m365sync disconnect --tenant {r.tenant})")
            continue
        lines.append(f"{r.tenant}{'' if r.enabled else ' (disabled)'}" + (f" [synced by {r.owner}]" if r.owner else ""))
        owner = f" as {r.auth_owner}" if r.auth_owner else ""
        reason = f" ({r.auth_reason})" if r.auth_reason else ""
        lines.append(f"  authorization: {r.auth_state}{owner}{reason}")
        if r.last_run:
            run = r.last_run
            counts = describe_counts(run["counts"])
            lines.append(f"  last run: {_when(run['started_at'])}, {run['duration_seconds']} s, {run['result']}; {counts}")
            if run.get("error"):
                lines.append(f"    error: {run['error']}")
        else:
            lines.append("  last run: never")
        lines.append(f"  next run: {_when(r.next_run)}")
        if r.freshness:
            lines.append(f"  freshness: {describe_freshness(r.freshness)}")
        lines.append(f"  held deprovisions: {len(r.held)}" + (" (approve with: m365sync approve --tenant " + r.tenant + ")" if r.held else ""))
        for item in r.held[:20]:
            lines.append(f"    {item['action']} {item['name']}")
        if r.failed:
            lines.append(f"  failed, tried again later: {len(r.failed)}")
            for failure in r.failed[:20]:
                lines.append(f"    {failure['name']}: {failure['error']} (next try after {_when(failure['retry_at'])})")
        lines.append(f"  quarantined: {len(r.quarantined)}")
        for quarantined in r.quarantined[:20]:
            lines.append(f"    {quarantined['name']}: {quarantined['error']}")
        if r.unreadable_calendars or r.unreadable_mailboxes:
            lines.append(f"  calendars not readable (403): {', '.join(r.unreadable_calendars) or 'none'}")
            lines.append(f"  mailboxes not readable (403): {', '.join(r.unreadable_mailboxes) or 'none'}")
        if r.presence_denied:
            lines.append(f"  presence not permitted (403) since {_when(r.presence_denied.get('since'))}: "
                         f"{r.presence_denied.get('reason')}; grant Presence.Read.All")
        if r.unreadable_mailbox_settings:
            lines.append(f"  mailbox settings not readable (403): {len(r.unreadable_mailbox_settings)} mailbox(es), "
                         f"not known to be shared; {r.shared_detection_fix}")
        for note in r.selects_nobody:
            lines.append(f"  selects nobody: {note}")
    return "\n".join(lines)


def describe_freshness(fresh: dict[str, Any]) -> str:
    """``push (12 subscriptions, last notification ...)`` or ``poll: why``."""
    last = f", last notification {_when(fresh.get('last_notification'))}" if fresh.get("last_notification") else ""
    if fresh.get("mode") == "push":
        return f"push ({fresh.get('subscriptions', 0)} subscriptions{last})"
    return f"{fresh.get('mode')}: {fresh.get('reason')}{last}"


def _name(data: dict[str, Any], fallback: str) -> str:
    """How people know an object: a user's UPN, a group's or contact's display name."""
    return str(data.get("userPrincipalName") or data.get("displayName") or fallback)
