"""The admins' status page (``/``): every tenant's readiness and the command that
fixes it, its runs drawn as an inline SVG chart, what it has pushed and what it
holds back. Server-rendered from :func:`daemon.status.collect`'s reports; no
external assets, so the page's strict CSP holds, and one column on a phone."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from daemon.status import HISTORY_RUNS, TenantReport, describe_freshness
from daemon.sync.report import describe_counts

RESULT_COLOURS = {"success": "#2e7d32", "partial": "#ef6c00", "deprovisions_held": "#ef6c00", "running": "#1565c0"}
FAILED_COLOUR = "#c62828"
CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 300, 60, 4

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:.5rem 1rem;color:#222;overflow-wrap:anywhere}"
    "h1{font-size:1.4rem}h2{font-size:1.2rem;margin:.6rem 0}"
    "header p{margin:.2rem 0;color:#555}"
    "section{border:1px solid #ccc;border-radius:6px;padding:0 1rem 1rem;margin-bottom:1rem}"
    ".badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;color:#fff;font-size:.9rem;margin-left:.4rem}"
    ".ready .badge{background:#2e7d32}.attention .badge{background:#ef6c00}.not-ready .badge{background:#c62828}.not-ready{border-color:#c62828}"
    ".readiness{background:#fdecea;border-radius:4px;padding:.5rem;margin:.5rem 0}"
    "dl{display:grid;grid-template-columns:11rem minmax(0,1fr);gap:.3rem .8rem;margin:0}"
    "dt{font-weight:bold}dd{margin:0;overflow-wrap:anywhere}"
    "code{background:#f2f2f2;padding:.1rem .3rem;overflow-wrap:anywhere}"
    "ul{margin:.2rem 0;padding-left:1.2rem}"
    "table{border-collapse:collapse;font-size:.85rem;width:100%;table-layout:fixed}td,th{text-align:left;padding:.1rem .3rem;"
    "border-bottom:1px solid #eee;vertical-align:top}"
    "svg{max-width:100%;height:auto}"
    "@media (max-width:40rem){dl{grid-template-columns:minmax(0,1fr)}td{overflow-wrap:anywhere}dt{margin-top:.4rem}}"
)


@dataclass(frozen=True)
class DaemonInfo:
    """Which daemon answers: its version, its instance name and since when it runs."""

    version: str
    instance: str
    started_at: float


def render(reports: list[TenantReport], daemon: DaemonInfo, now: float, refresh_seconds: int = 30) -> str:
    header = (f"<header><h1>m365sync status</h1><p id='daemon'>version <span class='version'>{escape(daemon.version)}</span>"
              f" &middot; instance <span class='instance'>{escape(daemon.instance)}</span>"
              f" &middot; up <span class='uptime'>{_span(now - daemon.started_at)}</span>"
              f" &middot; {escape(_when(now))}</p></header>")
    body = "".join(_leftover(r) if r.leftover else _tenant(r) for r in reports) or "<p>No tenants configured.</p>"
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<meta http-equiv='refresh' content='{refresh_seconds}'>"
            f"<title>m365sync status</title><style>{STYLE}</style></head><body>{header}{body}</body></html>")


def _leftover(r: TenantReport) -> str:
    return (f"<section class='tenant leftover' id='tenant-{escape(r.tenant)}'><h2>{escape(r.tenant)}</h2>"
            "<p>Not in the configuration; its state stays until "
            f"<code>m365sync disconnect --tenant {escape(r.tenant)}</code>.</p></section>")


def _tenant(r: TenantReport) -> str:
    attention = _attention(r)
    state = ("attention" if attention else "ready") if r.ready else "not-ready"
    badge = (f"Ready, needs attention: {attention}" if attention else "Ready") if r.ready \
        else f"Not ready: {escape(r.ready_reason)}"
    readiness = "" if r.ready else (
        f"<div class='readiness'><p class='reason'>{escape(r.ready_detail)}</p>"
        + (f"<p>Fix: <code class='fix'>{escape(r.fix)}</code></p>" if r.fix else "") + "</div>")
    rows = [
        ("Synced by", "owner", escape(r.owner)) if r.owner else None,
        ("Authorization", "auth", escape(r.auth_state) + (f" as {escape(r.auth_owner)}" if r.auth_owner else "")),
        ("Last success", "last-success", escape(_when(r.last_success)) if r.last_success else "never"),
        ("Last attempt", "last-attempt", _last_attempt(r.last_run)),
        ("Last error", "last-error", escape(r.last_run["error"])) if r.last_run and r.last_run.get("error") else None,
        ("Next run", "next-run", escape(_when(r.next_run)) + _local(r.next_run, r.timezone)),
        ("Schedule", "schedule", f"<code>{escape(r.schedule)}</code>"),
        ("Freshness", "freshness", escape(describe_freshness(r.freshness))) if r.freshness else None,
        ("Cloud", "cloud", escape(r.cloud)),
        ("Features", "features", escape(", ".join(r.features)) or "none enabled"),
        ("Pushed to the PBX", "synced", escape(", ".join(f"{n} {kind}s" for kind, n in r.synced.items())) or "-"),
        ("Failed (last run)", "failed", _listed(len(r.failures), r.failures)),
        ("Held deprovisions", "held", _held(r)),
        ("Quarantined", "quarantined", _listed(len(r.quarantined), [f"{q['name']}: {q['error']}" for q in r.quarantined])),
        _unreadable(r),
        ("Presence", "presence-denied", f"not permitted (403) since {escape(_when(r.presence_denied.get('since')))}: "
         f"{escape(str(r.presence_denied.get('reason')))}; grant Presence.Read.All") if r.presence_denied else None,
        ("Shared-mailbox detection", "unreadable-settings",
         f"mailbox settings not readable (403): {len(r.unreadable_mailbox_settings)} mailbox(es), not known to be shared; "
         f"{escape(r.shared_detection_fix or '')}") if r.unreadable_mailbox_settings else None,
        ("Settings that select nobody", "selects-nobody", _listed(len(r.selects_nobody), r.selects_nobody))
        if r.selects_nobody else None,
        ("Redirect URIs to register", "redirect-uris",
         "<ul>" + "".join(f"<li>{escape(label)}: <code>{escape(uri)}</code></li>" for label, uri in r.redirect_uris) + "</ul>"),
        ("Authorize", "authorize", f"<a class='authorize' href='{escape(r.authorize_url)}'>open the authorization page</a>"),
    ]
    items = "".join(f"<dt>{title}</dt><dd class='{css}'>{html}</dd>" for title, css, html in filter(None, rows))
    return (f"<section class='tenant {state}' id='tenant-{escape(r.tenant)}'>"
            f"<h2>{escape(r.tenant)}{'' if r.enabled else ' (disabled)'}<span class='badge'>{badge}</span></h2>"
            f"{readiness}<dl>{items}</dl>{_history(r.runs)}</section>")


def _attention(r: TenantReport) -> str:
    """What a ready tenant still asks of the admin: amber, not green, so a glance does not miss it."""
    counts = [(max(len(r.failures), len(r.failed)), "failed"), (len(r.held), "held"),
              (len(r.quarantined), "quarantined")]
    return ", ".join(f"{n} {what}" for n, what in counts if n)


def _last_attempt(run: dict[str, Any] | None) -> str:
    if not run:
        return "never"
    return (f"{escape(_when(run['started_at']))}, {run['duration_seconds']} s, <strong>{escape(str(run['result']))}</strong>;"
            f" {escape(describe_counts(run['counts']))}")


def _held(r: TenantReport) -> str:
    if not r.held:
        return "0"
    items = "".join(f"<li>{escape(h['action'])} {escape(h['name'])}</li>" for h in r.held[:50])
    return (f"{len(r.held)} &mdash; approve with <code class='approve'>m365sync approve --tenant {escape(r.tenant)}</code>"
            f"<ul>{items}</ul>")


def _listed(count: int, texts: list[str]) -> str:
    return str(count) + ("<ul>" + "".join(f"<li>{escape(t or '')}</li>" for t in texts[:50]) + "</ul>" if texts else "")


def _unreadable(r: TenantReport) -> tuple[str, str, str] | None:
    if not (r.unreadable_calendars or r.unreadable_mailboxes):
        return None
    return ("Not readable (403)", "unreadable", f"calendars: {escape(', '.join(r.unreadable_calendars)) or 'none'}; "
            f"mailboxes: {escape(', '.join(r.unreadable_mailboxes)) or 'none'}")


def _history(runs: list[dict[str, Any]]) -> str:
    """The last runs, oldest left: bar height the duration, colour the result; then the same as a table."""
    if not runs:
        return "<p class='history'>No runs yet.</p>"
    oldest_first = list(reversed(runs))
    longest = max((run["duration_seconds"] or 0 for run in runs), default=0) or 1
    width = CHART_WIDTH / max(HISTORY_RUNS, len(oldest_first))  # one slot per run: a single run is not one wide block
    bars = []
    for i, run in enumerate(oldest_first):
        height = max(2.0, (run["duration_seconds"] or 0) / longest * (CHART_HEIGHT - 2))
        colour = RESULT_COLOURS.get(str(run["result"]), FAILED_COLOUR)
        bars.append(f"<rect x='{i * width + BAR_GAP / 2:.1f}' y='{CHART_HEIGHT - height:.1f}' width='{width - BAR_GAP:.1f}' "
                    f"height='{height:.1f}' fill='{colour}'><title>{escape(_when(run['started_at']))}: "
                    f"{escape(str(run['result']))}, {run['duration_seconds']} s</title></rect>")
    chart = (f"<svg class='history-chart' role='img' aria-label='duration and result of the last {len(runs)} runs' "
             f"viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' width='{CHART_WIDTH}' height='{CHART_HEIGHT}' "
             f"xmlns='http://www.w3.org/2000/svg'>{''.join(bars)}</svg>")
    table = "".join(f"<tr><td>{escape(_when(run['started_at']))}</td><td class='result'>{escape(str(run['result']))}</td>"
                    f"<td>{run['duration_seconds']} s</td><td>{escape(describe_counts(run['counts']))}</td></tr>"
                    for run in runs)
    return (f"<h3>Last runs</h3>{chart}<table class='history'><tr><th>started</th><th>result</th><th>took</th>"
            f"<th>changes</th></tr>{table}</table>")


def _when(moment: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment)) if moment else "-"


def _local(moment: float | None, zone: str) -> str:
    """`` (02:30 Europe/Berlin)``: the time as the tenant's schedule reads it."""
    if not moment or not zone or zone == "UTC":
        return ""
    local = datetime.fromtimestamp(moment, ZoneInfo(zone))
    return f" ({escape(local.strftime('%Y-%m-%d %H:%M'))} {escape(zone)})"


def _span(seconds: float) -> str:
    """``3 d 4 h``, ``5 h 2 min``, ``42 min``: how long, to the unit that matters."""
    minutes = int(seconds // 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
