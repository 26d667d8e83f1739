"""What an operator asks first: per tenant, authorization, last run, next run,
held deprovisions and quarantined objects. One collector, three renderings:
``m365sync status`` (text), ``GET /api/status`` (JSON) and ``/`` (HTML)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

from daemon.config import Config
from daemon.sync.read_mailboxes import SHARED_DETECTION_FIX, unreadable_settings
from daemon.sync.report import describe_counts
from state.store import Store
from state.sync_store import SyncStore

NEXT_RUN_KEY = "next_run"


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


async def collect(config: Config, store: Store, sync_store: SyncStore, next_runs: dict[str, float] | None = None,
                  owners: Mapping[str, str] | None = None) -> list[TenantReport]:
    """Every tenant's report; ``owners`` (tenant -> daemon) from the daemon, none from the CLI."""
    rows = {row.name: row for row in await store.tenants()}
    reports = []
    for tenant in config.tenants:
        row = rows.get(tenant.name)
        run = await store.last_run(tenant.name)
        last = None
        if run is not None:
            last = {"id": run.id, "trigger": run.trigger, "started_at": run.started_at,
                    "duration_seconds": round(run.finished_at - run.started_at, 2) if run.finished_at else None,
                    "result": run.result or "running", "counts": run.summary.get("counts", {}), "error": run.error}
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
        ))
    configured = {t.name for t in config.tenants}
    for name, row in sorted(rows.items()):
        if name not in configured:
            reports.append(TenantReport(tenant=name, enabled=False, auth_state=row.auth_state, auth_owner=row.auth_owner,
                                        auth_reason=row.auth_reason, last_run=None, next_run=None, leftover=True))
    return reports


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
        if r.unreadable_mailbox_settings:
            lines.append(f"  mailbox settings not readable (403): {len(r.unreadable_mailbox_settings)} mailbox(es), "
                         f"not known to be shared; {r.shared_detection_fix}")
        for note in r.selects_nobody:
            lines.append(f"  selects nobody: {note}")
    return "\n".join(lines)


def as_html(reports: list[TenantReport], refresh_seconds: int = 30) -> str:
    sections = []
    for r in reports:
        if r.leftover:
            sections.append(f"<section class='tenant leftover' id='tenant-{escape(r.tenant)}'><h2>{escape(r.tenant)}</h2>"
                            "<p>Not in the configuration; its state stays until "
                            f"<code>m365sync disconnect --tenant {escape(r.tenant)}</code>.</p></section>")
            continue
        run = r.last_run
        run_text = "never"
        if run:
            counts = escape(describe_counts(run["counts"]))
            run_text = f"{escape(_when(run['started_at']))}, {run['duration_seconds']} s, <strong>{escape(str(run['result']))}</strong>; {counts}"
        held = "".join(f"<li>{escape(h['action'])} {escape(h['name'])}</li>" for h in r.held[:50])
        quarantined = "".join(f"<li>{escape(q['name'] or '')}: {escape(q['error'] or '')}</li>" for q in r.quarantined[:50])
        sections.append(
            f"<section class='tenant' id='tenant-{escape(r.tenant)}'><h2>{escape(r.tenant)}</h2><dl>"
            + (f"<dt>Synced by</dt><dd class='owner'>{escape(r.owner)}</dd>" if r.owner else "")
            + f"<dt>Authorization</dt><dd>{escape(r.auth_state)}{(' as ' + escape(r.auth_owner)) if r.auth_owner else ''}</dd>"
            f"<dt>Last run</dt><dd>{run_text}</dd>"
            f"<dt>Next run</dt><dd>{escape(_when(r.next_run))}</dd>"
            f"<dt>Held deprovisions</dt><dd class='held'>{len(r.held)}"
            + (f" &mdash; approve with <code>m365sync approve --tenant {escape(r.tenant)}</code><ul>{held}</ul>" if r.held else "")
            + f"</dd><dt>Quarantined</dt><dd class='quarantined'>{len(r.quarantined)}"
            + (f"<ul>{quarantined}</ul>" if quarantined else "")
            + "</dd><dt>Not readable (403)</dt><dd class='unreadable'>calendars: "
            + (escape(", ".join(r.unreadable_calendars)) or "none") + "; mailboxes: "
            + (escape(", ".join(r.unreadable_mailboxes)) or "none")
            + "</dd>"
            + ("<dt>Shared-mailbox detection</dt><dd class='unreadable-settings'>mailbox settings not readable (403): "
               f"{len(r.unreadable_mailbox_settings)} mailbox(es), not known to be shared; "
               f"{escape(r.shared_detection_fix or '')}</dd>" if r.unreadable_mailbox_settings else "")
            + ("<dt>Settings that select nobody</dt><dd class='selects-nobody'><ul>"
               + "".join(f"<li>{escape(n)}</li>" for n in r.selects_nobody) + "</ul></dd>" if r.selects_nobody else "")
            + "</dl></section>"
        )
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
             "section{border:1px solid #ddd;border-radius:4px;padding:0 1rem 1rem;margin-bottom:1rem}"
             "dt{font-weight:bold;margin-top:.5rem}code{background:#f2f2f2;padding:.1rem .3rem}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta http-equiv='refresh' content='{refresh_seconds}'>"
            f"<title>m365sync status</title><style>{style}</style></head><body><h1>m365sync status</h1>{''.join(sections)}</body></html>")


def _name(data: dict[str, Any], fallback: str) -> str:
    """How people know an object: a user's UPN, a group's or contact's display name."""
    return str(data.get("userPrincipalName") or data.get("displayName") or fallback)
