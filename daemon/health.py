"""Whether each tenant can sync, and why not: what ``/readyz`` reports.

Readiness is derived, never stored: from the tenant's configuration (secret
files present, private and not empty) and its row in the state database (authorization).

``/readyz`` answers without authentication, so a status carries a reason code
and a line of our own words (a secret file's path, an AADSTS code may appear);
never a stored reason's words: those live on the authenticated ``/api/status``
and in ``m365sync status``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from daemon.auth.scopes import delegated_scopes
from daemon.auth.states import AUTHORIZED
from daemon.config import TenantConfig, secret_file_problem
from daemon.redact import redact_text
from daemon.secrets import is_empty_secret
from state.store import TenantRow

_AADSTS = re.compile(r"\bAADSTS\d{1,9}\b")


@dataclass(frozen=True)
class TenantStatus:
    tenant: str
    enabled: bool
    ready: bool
    reason: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def tenant_status(tenant: TenantConfig, row: TenantRow | None, config_file: str) -> TenantStatus:
    """The first reason, in the order an operator should fix them, that blocks a tenant."""
    if not tenant.enabled:
        return TenantStatus(tenant.name, False, False, "disabled", "enabled = false in the config")
    for key, path in tenant.secret_files().items():
        problem = secret_file_problem(path)
        if problem is not None:
            return TenantStatus(tenant.name, True, False, "secret_file_unusable", redact_text(f"{key}: {problem[0]}"))
        if is_empty_secret(path):
            return TenantStatus(tenant.name, True, False, "secret_file_unusable", f"{key}: the file {path} is empty")
    state = row.auth_state if row is not None else "authorization_required"
    if state != AUTHORIZED:
        command = f"m365sync authorize --config {config_file} --tenant {tenant.name}"
        if state == "disconnected":
            detail = f"disconnected with m365sync disconnect; to resume, run: {command}"
        elif state == "reauthorization_required":
            code = _AADSTS.search(row.auth_reason or "") if row is not None else None  # a code, never the words
            why = f"{code.group(0)}; " if code else ""
            detail = f"the stored authorization no longer works ({why}why: m365sync status, or /api/status); run: {command}"
        elif tenant.auth_mode == "application":
            detail = f"waiting for admin consent and a first token; run: {command}"
        else:
            detail = f"waiting for the integration owner to sign in; run: {command}"
        return TenantStatus(tenant.name, True, False, state, detail)
    missing = missing_scopes(tenant, row)
    if missing:
        command = f"m365sync authorize --config {config_file} --tenant {tenant.name}"
        return TenantStatus(tenant.name, True, False, "reauthorization_required",
                            f"the configuration now needs {', '.join(missing)}, which the owner's last sign-in did not "
                            f"consent to (e.g. presence.enabled adds Presence.Read.All); the owner signs in again: "
                            f"{command}")
    return TenantStatus(tenant.name, True, True, "ready", "authorized")


def missing_scopes(tenant: TenantConfig, row: TenantRow | None) -> list[str]:
    """Delegated scopes the settings need beyond those asked at the last sign-in (by name)."""
    if tenant.auth_mode != "delegated" or row is None or row.auth_scopes is None:
        return []
    asked = {scope.rsplit("/", 1)[-1] for scope in row.auth_scopes.split()}
    return [name for name in (scope.rsplit("/", 1)[-1] for scope in delegated_scopes(tenant)) if name not in asked]
