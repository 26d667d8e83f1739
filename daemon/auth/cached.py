"""An application-mode access token that MSAL would hand out from its cache,
read without importing MSAL.

Importing MSAL and ``requests`` cost a ``sync --once`` process ~0.08 s of CPU, and
a run in application mode usually finds an unexpired token in the sealed cache
the last run stored. This reads that cache (MSAL's serialized JSON) with MSAL's
own rules for a client-credentials token (``ClientApplication.
_acquire_token_silent_from_cache_and_possibly_refresh_it``): same client, same
authority host and tenant, no account, every requested scope, at least 5
minutes left and not yet due for a proactive refresh. It only ever answers with
a token MSAL would also accept; anything else (no such entry, a key-bound or
extended-cache token, a delegated cache) is ``None`` and the caller asks MSAL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

EXPIRY_MARGIN_SECONDS = 5 * 60  # MSAL treats a token with less left as expired
SECRET_KINDS = ("AccessToken", "RefreshToken", "IdToken")


def parse_cache(text: str) -> dict[str, Any]:
    """The serialized cache as a dict; an unreadable one is empty (MSAL reads it then)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def cached_secrets(cache: dict[str, Any]) -> Iterator[str]:
    """Every token the cache holds, for redaction (as ``tokens._remember_tokens`` does through MSAL)."""
    for kind in SECRET_KINDS:
        section = cache.get(kind)
        for entry in section.values() if isinstance(section, dict) else ():
            if isinstance(entry, dict) and isinstance(entry.get("secret"), str):
                yield entry["secret"]


def application_token(cache: dict[str, Any], client_id: str, authority: str, scopes: Sequence[str],
                      now: float) -> str | None:
    """The cached client-credentials token for ``scopes``, or None when MSAL has to be asked."""
    parts = urlsplit(authority)
    segments = parts.path.split("/")
    if parts.scheme != "https" or not parts.hostname or len(segments) < 2 or not segments[1]:
        return None
    environment, realm = parts.hostname, segments[1]  # as msal.authority.canonicalize reads them
    section = cache.get("AccessToken")
    for entry in section.values() if isinstance(section, dict) else ():
        if _usable(entry, client_id, environment, realm, set(scopes), now):
            return str(entry["secret"])
    return None


def _usable(entry: object, client_id: str, environment: str, realm: str, scopes: set[str], now: float) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("secret"), str):
        return False
    if (entry.get("credential_type") != "AccessToken" or entry.get("client_id") != client_id
            or entry.get("environment") != environment or entry.get("realm") != realm):
        return False
    if entry.get("home_account_id") or entry.get("key_id") or entry.get("ext_cache_key"):
        return False  # a user's token, or one bound to a key or a path: MSAL's business
    if entry.get("token_type", "Bearer").lower() != "bearer":
        return False
    if not scopes <= set(str(entry.get("target", "")).split()):
        return False
    try:
        expires_on = int(entry["expires_on"])
        refresh_on = int(entry.get("refresh_on", expires_on))
    except (KeyError, TypeError, ValueError):
        return False
    return expires_on - now >= EXPIRY_MARGIN_SECONDS and refresh_on >= now
