"""The one aiohttp application: health, readiness, metrics (and later the
OAuth pages and the admin API).

Handlers only translate between HTTP and the :class:`StatusSource`; unexpected
errors become a JSON 500 without a traceback in the response. Every answer
that may quote what an upstream said passes through :mod:`daemon.redact`.
"""

from __future__ import annotations

import base64
import hmac
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from daemon import __version__, status
from daemon.auth.manager import START_PATH, AuthManager, PageResult
from daemon.config import CALLBACK_PATH
from daemon.errors import NoLeaseHolder
from daemon.health import TenantStatus
from daemon.history_view import ObjectHistory
from daemon.http_guard import MAX_BODY_BYTES, ConnectionGuard
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.metrics_export import CONTENT_TYPE
from daemon.notify.endpoint import NotificationSink, RateLimit, add_routes
from daemon.redact import redact_text, redact_value
from daemon.status import TenantReport
from daemon.status_page import DaemonInfo, render

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusSource(Protocol):
    async def tenant_statuses(self) -> list[TenantStatus]: ...


class Control(Protocol):
    """The admin API's view of the running daemon."""

    async def request(self, tenant: str, trigger: str = ...) -> str | None: ...

    async def run_status(self, tenant: str, run_id: str) -> dict[str, Any] | None: ...

    async def status_reports(self) -> list[TenantReport]: ...

    async def object_history(self, tenant: str, reference: str) -> ObjectHistory | None: ...


STATUS_KEY = web.AppKey("status_source", StatusSource)
METRICS_KEY = web.AppKey("metrics", Metrics)
AUTH_KEY = web.AppKey("auth", AuthManager)
CONTROL_KEY = web.AppKey("control", Control)
ADMIN_TOKEN_KEY = web.AppKey("admin_token", str)
DAEMON_KEY = web.AppKey("daemon", DaemonInfo)

# Pages of the OAuth flow are never cached, framed, or leak their URL onward.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
}


def build_app(
    status: StatusSource,
    metrics: Metrics,
    auth: AuthManager | None = None,
    admin_token: str | None = None,
    control: Control | None = None,
    guard: ConnectionGuard | None = None,
    instance: str | None = None,
    notifications: NotificationSink | None = None,
) -> web.Application:
    """The application with every route of the daemon; ``guard``, the listening
    socket's connection guard, learns which connections are in a request."""
    middlewares = [guard.middleware, _errors_middleware] if guard is not None else [_errors_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[STATUS_KEY] = status
    app[METRICS_KEY] = metrics
    app[ADMIN_TOKEN_KEY] = admin_token or ""
    app[DAEMON_KEY] = DaemonInfo(__version__, instance or socket.gethostname(), time.time())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    if auth is not None:
        app[AUTH_KEY] = auth
        app.router.add_get(START_PATH, auth_start)
        app.router.add_get(CALLBACK_PATH, auth_callback)
    if notifications is not None:  # Graph's change notifications, under /api/graph/
        add_routes(app, notifications, RateLimit(monotonic=time.monotonic))
    if control is not None:
        app[CONTROL_KEY] = control
        app.router.add_post("/api/tenants/{name}/sync", sync_now)
        app.router.add_get("/api/tenants/{name}/runs/{run_id}", run_status)
        app.router.add_get("/api/status", status_json)
        app.router.add_get("/api/tenants/{name}/history/{object}", history_json)
        app.router.add_get("/", status_page)
    return app


def _require_admin(request: web.Request, *, changes_state: bool = False) -> None:
    """401 without the admin token. Reads accept it as a bearer token or as the
    browser's Basic password (the status page); a request that changes state
    takes the bearer token only, and is refused from another site (a browser's
    cached Basic login must not let another site's page trigger a sync)."""
    if changes_state and _cross_site(request):
        raise web.HTTPForbidden(text=json.dumps({"error": "cross-site requests are refused"}),
                                content_type="application/json")
    if not is_admin(request, allow_basic=not changes_state):
        hint = ("Authorization: Bearer <admin token>" if changes_state else
                "Authorization: Bearer <admin token>, or in a browser any user name and the admin token as password")
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": f"the admin token is required ({hint})"}),
            content_type="application/json",
            headers={} if changes_state else {"WWW-Authenticate": 'Basic realm="m365sync admin", charset="UTF-8"'},
        )


def _cross_site(request: web.Request) -> bool:
    """A browser says so (Sec-Fetch-Site), or sends an Origin other than this server's."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin != f"{request.scheme}://{request.host}"


async def sync_now(request: web.Request) -> web.Response:
    """Sync now: 202 with the id of a run that will run; 503 (with Retry-After) while no
    daemon of a shared state holds the tenant; 401 without the admin token, starting nothing."""
    _require_admin(request, changes_state=True)
    name = request.match_info["name"]
    control = request.app[CONTROL_KEY]
    if not any(s.tenant == name for s in await request.app[STATUS_KEY].tenant_statuses()):
        return web.json_response({"error": f"no tenant named {name!r}"}, status=404)
    photos = request.query.get("photos", "") in ("1", "true")  # check every photo, not only those due
    try:
        run_id = await control.request(name, "sync-now:photos" if photos else "sync-now")
    except NoLeaseHolder as err:
        return web.json_response({"error": str(err)}, status=503, headers={"Retry-After": str(err.retry_after)})
    if run_id is None:
        return web.json_response({"error": f"tenant {name!r} is disabled or not scheduled"}, status=409)
    location = f"/api/tenants/{name}/runs/{run_id}"
    return web.json_response({"tenant": name, "run_id": run_id, "status": location}, status=202,
                             headers={"Location": location})


async def run_status(request: web.Request) -> web.Response:
    _require_admin(request)
    found = await request.app[CONTROL_KEY].run_status(request.match_info["name"], request.match_info["run_id"])
    if found is None:
        return web.json_response({"error": "no such run"}, status=404)
    return web.json_response(redact_value(found))


async def status_json(request: web.Request) -> web.Response:
    _require_admin(request)
    return web.json_response(redact_value(status.as_json(await request.app[CONTROL_KEY].status_reports())))


async def history_json(request: web.Request) -> web.Response:
    """What happened to one user or group, when and why (admin token)."""
    _require_admin(request)
    found = await request.app[CONTROL_KEY].object_history(request.match_info["name"], request.match_info["object"])
    if found is None:
        return web.json_response({"error": "no such user or group, and nothing written under that name"}, status=404)
    return web.json_response(found.as_json())


async def status_page(request: web.Request) -> web.Response:
    """The admins' status page (Bearer or Basic authentication with the admin token)."""
    _require_admin(request)
    html = redact_text(render(await request.app[CONTROL_KEY].status_reports(), request.app[DAEMON_KEY], time.time()))
    return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)


def is_admin(request: web.Request, *, allow_basic: bool = True) -> bool:
    """The request carries the admin token, as a bearer token or (``allow_basic``)
    as the password of HTTP Basic authentication (for browsers); compared in constant time."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        if not allow_basic:
            return False
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        header = "Bearer " + decoded.partition(":")[2]
    return admin_token_matches(request.app[ADMIN_TOKEN_KEY] or None, header)


def _html(result: PageResult) -> web.Response:
    return web.Response(text=redact_text(result.html), status=result.status, content_type="text/html", headers=PAGE_HEADERS)


async def auth_start(request: web.Request) -> web.Response:
    """The start page: needs the one-time link, or the admin token."""
    query = request.query
    via = query.get("via", "pbx")
    result = await request.app[AUTH_KEY].begin(query.get("tenant", ""), query.get("link"), is_admin(request), via)
    return _html(result)


async def auth_callback(request: web.Request) -> web.Response:
    """Where Microsoft sends the browser back; the query is never logged."""
    result = await request.app[AUTH_KEY].complete(dict(request.query))
    return _html(result)


async def healthz(_request: web.Request) -> web.Response:
    """200 for as long as the process and its event loop answer at all."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Per-tenant readiness; 503 while any enabled tenant cannot sync."""
    statuses = await request.app[STATUS_KEY].tenant_statuses()
    enabled = [s for s in statuses if s.enabled]
    ready = all(s.ready for s in enabled)
    body = {
        "ready": ready,
        "tenants": {s.tenant: {k: v for k, v in s.as_json().items() if k != "tenant"} for s in statuses},
    }
    return web.json_response(redact_value(body), status=200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    await request.app[STATUS_KEY].tenant_statuses()  # refreshes the readiness gauges
    # not scrubbed: its labels are our own words (tenant names, kinds, reason codes), and a scan per scrape costs
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return web.json_response({"error": "internal error; see the daemon's log"}, status=500)


def admin_token_matches(expected: str | None, header: str | None) -> bool:
    """Constant-time check of ``Authorization: Bearer <admin token>``."""
    if not expected or not header:
        return False
    scheme, _, presented = header.partition(" ")
    try:
        offered = presented.strip().encode()
    except UnicodeError:  # bytes that are not UTF-8 (kept as surrogates by the HTTP parser): not our token
        return False
    return scheme.lower() == "bearer" and hmac.compare_digest(offered, expected.encode())
