"""Opaque, tamper-evident skip and delta tokens.

The real service's tokens are opaque strings that carry the original query;
ours are base64url JSON with an HMAC, so a client that edits or invents one
gets the same 400 ``syncStateNotFound`` it would get from Graph.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any


class BadToken(Exception):
    """The token was not issued by this simulator (or was altered)."""


class TokenCodec:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def encode(self, state: dict[str, Any]) -> str:
        body = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def decode(self, token: str) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as err:
            raise BadToken("not base64") from err
        mac, body = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()[:16]):
            raise BadToken("signature mismatch")
        state: dict[str, Any] = json.loads(body)
        return state
