"""Rules that join several keys (a range's two ends, a mode and its
credentials, names unique across tenants), each problem located by its field
path with the operator's message."""

from __future__ import annotations

import json
from typing import Any

from daemon.config_models import CALLBACK_PATH, ServerConfig, TenantConfig
from daemon.config_values import TENANT_NAME_PATTERN
from daemon.errors import ConfigProblem


def tenant_rules(tenant: TenantConfig, index: int) -> list[ConfigProblem]:
    """Rules that join several keys of one tenant."""
    at = f"tenants[{index}]"
    problems: list[ConfigProblem] = []
    if not TENANT_NAME_PATTERN.fullmatch(tenant.name):
        problems.append(
            ConfigProblem(
                f"{at}.name",
                "must be 1-63 characters of lower-case letters, digits, '-' or '_', "
                f"starting with a letter or digit (got {json.dumps(tenant.name)})",
            )
        )
    users = tenant.users
    if users.enabled and users.starting_extension_number is None:
        problems.append(
            ConfigProblem(
                f"{at}.users.starting_extension_number",
                'required when users.enabled = true (e.g. "1001")',
            )
        )
    first, last = users.starting_extension_number, users.last_extension_number
    if first is not None and last is not None and int(last) < int(first):
        problems.append(
            ConfigProblem(
                f"{at}.users.last_extension_number",
                f"must not be below starting_extension_number {first} (got {json.dumps(last)})",
            )
        )
    if tenant.auth_mode == "application":
        has_certificate = tenant.client_certificate_file is not None
        has_key = tenant.client_private_key_file is not None
        if has_certificate != has_key:
            missing = "client_private_key_file" if has_certificate else "client_certificate_file"
            problems.append(
                ConfigProblem(f"{at}.{missing}", "required together with its certificate/key pair")
            )
        if not has_certificate and not has_key and tenant.client_secret_file is None:
            problems.append(
                ConfigProblem(
                    f"{at}.auth_mode",
                    'application mode needs client_certificate_file + client_private_key_file '
                    "(preferred) or client_secret_file",
                )
            )
    else:
        for key in ("client_certificate_file", "client_private_key_file", "client_secret_file"):
            if getattr(tenant, key) is not None:
                problems.append(
                    ConfigProblem(
                        f"{at}.{key}",
                        'delegated mode is a public client and sends no credential '
                        '(Entra answers AADSTS700025); remove it or set auth_mode = "application"',
                    )
                )
    return problems


def unique_names(raw_tenants: list[Any]) -> list[ConfigProblem]:
    seen: dict[str, int] = {}
    problems: list[ConfigProblem] = []
    for index, raw in enumerate(raw_tenants):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(
                ConfigProblem(
                    f"tenants[{index}].name",
                    f"duplicate tenant name {json.dumps(name)} (also tenants[{seen[name]}])",
                )
            )
        else:
            seen[name] = index
    return problems


def public_url_warning(server: ServerConfig, tenants: list[TenantConfig]) -> ConfigProblem | None:
    """Without ``public_url`` the redirect URI is a localhost one, which only works on this host."""
    if server.public_url is None and any(t.enabled and t.auth_mode == "delegated" for t in tenants):
        return ConfigProblem(
            "server.public_url",
            f"not set, so the redirect URI is http://localhost:{server.port}{CALLBACK_PATH}, which only a "
            "browser on this host reaches; set it to the https address admins open (the PBX portal's)",
            is_warning=True)
    return None
