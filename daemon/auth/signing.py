"""Signed references to single-use rows: start links and OAuth ``state``.

A token is ``{id}.{mac}``: the id names a row in ``auth_attempts`` (which
holds expiry and use), the MAC binds it to its purpose and tenant with the
daemon's own key, so a forged, altered or cross-tenant token is refused
before the database is even asked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def new_attempt_id() -> str:
    return secrets.token_urlsafe(18)


def sign(key: bytes, purpose: str, tenant: str, attempt_id: str) -> str:
    return f"{attempt_id}.{_mac(key, purpose, tenant, attempt_id)}"


def verify(key: bytes, purpose: str, tenant: str, token: str) -> str | None:
    """The attempt id if ``token`` was signed for this purpose and tenant, else None."""
    attempt_id, _, mac = token.partition(".")
    if not attempt_id or not mac:
        return None
    if not hmac.compare_digest(mac, _mac(key, purpose, tenant, attempt_id)):
        return None
    return attempt_id


def _mac(key: bytes, purpose: str, tenant: str, attempt_id: str) -> str:
    digest = hmac.new(key, f"{purpose}\n{tenant}\n{attempt_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")
