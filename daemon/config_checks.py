"""Checks that catch what would only break later: an empty secret file, an
untouched ``init`` config, the callback URL pasted as ``public_url``, an
INCLUDE list with nobody in it, two tenants competing for one PBX, a state
folder the daemon cannot write, and features delegated mode cannot serve.

These came after configurations were already in use, so they never refuse a
configuration that loads: ``m365sync check-config`` reports each with its
severity (an error exits 2, ``--strict`` makes warnings errors too), while the
daemon's start and a reload only log them as warnings (:func:`log_findings`),
so an upgrade never stops a daemon that ran before.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from daemon.accounts import Account, daemon_account
from daemon.config import CALLBACK_PATH, Config, TenantConfig, secret_files
from daemon.errors import ConfigProblem
from daemon.graph.clouds import cloud_of
from daemon.logging import get_logger
from daemon.secrets import is_empty_secret
from daemon.setup import example_config

log = get_logger(__name__)

RESERVED_DOMAINS = ("example.com", "example.net", "example.org", "example")  # RFC 2606: never a real host
SYSTEMD_STATE_DIRECTORY = Path("/var/lib/m365sync")  # the unit's StateDirectory=: systemd creates it at start

EMPTY_SECRET_FIXES = {
    "server.admin_token_file": "write a random token into it, e.g.: openssl rand -base64 32",
    "state.encryption_key_file": "write a random key into it (the same on every host), e.g.: openssl rand -base64 32",
    "state.password_file": "write the PostgreSQL user's password into it",
    "pbx.token_file": "write the PBX's SCIM API token (from the PBX portal's Microsoft 365 page) into it",
    "client_secret_file": "write the app registration's client secret (its Value) into it",
    "client_private_key_file": "write the private key (PEM) of the certificate uploaded to Entra ID into it",
}


def findings(config: Config, account: Account | None = None) -> list[ConfigProblem]:
    """Everything below, in the order of the file; ``account`` is who must write the state."""
    problems = _empty_secret_files(config)
    problems += _untouched_example(config)
    problems += _callback_urls(config)
    problems += _state_path(config, daemon_account() if account is None else account)
    seen: dict[tuple[str, str], int] = {}
    for index, tenant in enumerate(config.tenants):
        at = f"tenants[{index}]"
        problems += _include_without_anybody(tenant, at)
        problems += _delegated_limits(tenant, at)
        problems += _unreachable_notifications(config, tenant, at)
        problems += _presence_unavailable(tenant, at)
        if tenant.enabled:
            target = (tenant.directory_id, _normalized(tenant.pbx.scim_url))
            if target in seen:
                problems.append(ConfigProblem(
                    f"{at}.pbx.scim_url",
                    f"tenants[{seen[target]}] already syncs directory {tenant.directory_id} into this PBX "
                    f"({tenant.pbx.scim_url}): the two would compete for the same users and extension numbers; "
                    "remove one of them, or give each its own PBX tenant's scim_url"))
            seen.setdefault(target, index)
    return problems


def log_findings(config: Config) -> None:
    """At start and reload: every finding as a logged warning, never a refusal."""
    for problem in findings(config):
        log.warning("configuration check", field=problem.path, problem=problem.message,
                    fix="m365sync check-config shows every finding")


def _empty_secret_files(config: Config) -> list[ConfigProblem]:
    problems = []
    for field_path, path in secret_files(config.server, config.state, list(config.tenants)):
        if is_empty_secret(path):
            fix = next(f for key, f in EMPTY_SECRET_FIXES.items() if field_path.endswith(key))
            problems.append(ConfigProblem(field_path, f"the file {path} is empty; {fix}"))
    return problems


def _untouched_example(config: Config) -> list[ConfigProblem]:
    """Values ``m365sync init`` copied from the example: its IDs are real ones (not yours), its hosts placeholders."""
    example = tomllib.loads(example_config())["tenants"][0]
    problems = []
    for name, url in (("server.public_url", config.server.public_url),
                      ("server.sbc_public_url", config.server.sbc_public_url)):
        if url is not None and _is_placeholder(url):
            problems.append(ConfigProblem(
                name, f"{url} is the example's placeholder; replace it with the https address admins open "
                      "(the PBX portal's), e.g. https://pbx.yourcompany.com:8887", is_warning=True))
    for index, tenant in enumerate(config.tenants):
        at = f"tenants[{index}]"
        for key, where in (("directory_id", "Directory (tenant) ID"), ("application_id", "Application (client) ID")):
            if getattr(tenant, key) == example[key]:
                problems.append(ConfigProblem(
                    f"{at}.{key}", f"still the example value {example[key]} (someone else's, not yours); replace it with "
                                   f"your app registration's {where} (Entra ID, App registrations, your app, Overview)",
                    is_warning=True))
        if _is_placeholder(tenant.pbx.scim_url):
            problems.append(ConfigProblem(
                f"{at}.pbx.scim_url", f"{tenant.pbx.scim_url} is the example's placeholder; replace it with your "
                                      "PBX's SCIM address (https://YOUR-PBX:8887/scim/v2)", is_warning=True))
    return problems


def _callback_urls(config: Config) -> list[ConfigProblem]:
    """The PBX shows the whole redirect URI; public_url is only its base (m365sync adds the path)."""
    problems = []
    for name, url in (("server.public_url", config.server.public_url),
                      ("server.sbc_public_url", config.server.sbc_public_url)):
        if url is None:
            continue
        base, marker, _ = url.partition("/api/auth/")
        if marker:
            problems.append(ConfigProblem(
                name, f"is a callback URL, not the base address: set {name.split('.')[1]} = {json.dumps(base)} "
                      f"(m365sync adds {CALLBACK_PATH} itself; otherwise the redirect URI would be "
                      f"{url}{CALLBACK_PATH})"))
    return problems


def _include_without_anybody(tenant: TenantConfig, at: str) -> list[ConfigProblem]:
    users = tenant.users
    if not users.enabled or users.sync_type != "INCLUDE" or users.selected_users or tenant.groups:
        return []
    return [ConfigProblem(
        f"{at}.users.sync_type",
        '"INCLUDE" with no users.selected_users and no groups syncs nobody (and would deprovision the users '
        "synced so far, as far as the mass-deletion guard lets it); list users in users.selected_users "
        'or Entra group IDs in groups, or set sync_type = "ALL"')]


def _unreachable_notifications(config: Config, tenant: TenantConfig, at: str) -> list[ConfigProblem]:
    """Graph posts change notifications from the internet: a public_url on a private or loopback
    address fails its handshake (the daemon keeps polling, and says so)."""
    url = config.server.public_url
    if url is None or not tenant.enabled or not tenant.notifications.enabled:
        return []
    host = urlsplit(url).hostname or ""
    try:
        private = ipaddress.ip_address(host).is_private
    except ValueError:
        private = host == "localhost"  # a name may resolve to anything: only addresses are judged
    if not private:
        return []
    return [ConfigProblem(f"{at}.notifications.enabled",
                          f"Graph cannot post change notifications to {url}/api/graph/ (not reachable from the "
                          "internet): changes wait for the polls and sync_time; expose /api/graph/ on a public "
                          "https address (contrib/proxy), or set notifications.enabled = false", is_warning=True)]


def _delegated_limits(tenant: TenantConfig, at: str) -> list[ConfigProblem]:
    """Delegated permissions read the signed-in owner's mailbox (and those shared with them in Exchange) only."""
    if tenant.auth_mode != "delegated" or not tenant.enabled:
        return []
    problems = []
    if tenant.shared_mailbox.enabled and not tenant.shared_mailbox.mailboxes:
        problems.append(ConfigProblem(
            f"{at}.shared_mailbox.enabled",
            "delegated mode cannot detect shared mailboxes: Graph answers 403 to every mailbox's settings but the "
            'signed-in owner\'s; list them in shared_mailbox.mailboxes, or use auth_mode = "application"',
            is_warning=True))
    for key, what in (("personal_contacts", "contacts"), ("events", "calendars")):
        if getattr(tenant, key).enabled:
            problems.append(ConfigProblem(
                f"{at}.{key}.enabled",
                f"delegated mode reads only the signed-in owner's {what} and those shared with them in Exchange; "
                f"every other user's {what} answer 403 and are skipped; to read every user's {what}, "
                'use auth_mode = "application"', is_warning=True))
    return problems


def _presence_unavailable(tenant: TenantConfig, at: str) -> list[ConfigProblem]:
    """Teams presence exists in the global and US government clouds only."""
    if not tenant.presence.enabled or cloud_of(tenant).presence:
        return []
    return [ConfigProblem(
        f"{at}.presence.enabled",
        f"Teams presence is not available in national_cloud = {json.dumps(tenant.national_cloud)} (21Vianet's "
        "Graph has no getPresencesByUserId and no presence subscriptions); set presence.enabled = false")]


def _state_path(config: Config, account: Account) -> list[ConfigProblem]:
    """The database, its -wal/-shm files and its key file must be writable by the daemon's user."""
    if config.state.shared:
        return []
    path = config.state.path
    try:
        if path.exists() and not account.may(path.stat(), read=True, write=True):
            return [ConfigProblem("state.path", f"{path} cannot be read and written by user {account.name}; "
                                                f"run: chown {account.name} {path}")]
        folder = path.parent
        while not folder.exists():
            if folder == SYSTEMD_STATE_DIRECTORY:
                return []
            folder = folder.parent
        if not account.may(folder.stat(), write=True, search=True):
            return [ConfigProblem(
                "state.path", f"the folder {folder} cannot be written by user {account.name} (the database, its "
                              f"-wal/-shm files and its key file go there); run: chown {account.name} {folder}, "
                              f"or set [state] path in a folder {account.name} owns "
                              f"(under systemd: {SYSTEMD_STATE_DIRECTORY})")]
    except PermissionError:
        if account.is_this_process:
            return [ConfigProblem("state.path", f"{path.parent} cannot be reached by user {account.name}; "
                                                f"run the command as the daemon's user, or check the folder's owner")]
    return []


def _is_placeholder(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == domain or host.endswith("." + domain) for domain in RESERVED_DOMAINS)


def _normalized(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}{parts.path.rstrip('/')}"
