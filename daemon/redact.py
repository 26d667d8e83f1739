"""The one redaction layer: every text that leaves the process (a log line, a
run record or object error written to the state, an API answer, a page,
``/readyz``, ``explain``, an exception's message) passes through
:func:`redact_text` or :func:`redact_value` first.

Two nets, because upstreams are not trusted to keep our secrets to themselves
(a PBX's ``detail``, Graph's ``message``, a token endpoint's description may
quote the request back):

- by shape: ``Authorization``/``Bearer``/``Basic`` values, JSON Web Tokens and
  the credential fields of OAuth (``client_secret``, ``code_verifier``,
  ``refresh_token``, ``access_token``, ``assertion``, ``client_assertion``,
  ``password`` ...) in form, query and JSON text;
- by value: every secret this process read or was issued (secret files and
  credentials, access and refresh tokens, the state key, the admin token) is
  added to a process-wide registry by whatever reads or receives it
  (:func:`remember_secret`), and any occurrence of one is replaced, whatever
  words surround it. Values under ``MIN_SECRET_LENGTH`` characters are not
  registered, so that a short secret cannot blank out common words.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8
REASON_LIMIT = 300  # a stored reason is a line, never an upstream's whole body

# Keys whose values are secret wherever they appear (compared lower-cased, with '-' read as '_').
SECRET_KEYS = frozenset({
    "access_token", "refresh_token", "id_token", "code", "code_verifier", "client_secret", "client_assertion",
    "assertion", "authorization", "password", "secret", "token", "admin_token", "bearer_token", "private_key",
    "cookie", "set_cookie",
})

_SECRET_PARAMS = (
    "access_token|refresh_token|id_token|code|code_verifier|client_secret"
    "|client_assertion|assertion|password|session_state"
)
_PATTERNS = [
    # Authorization headers and bare bearer/basic credentials.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # JSON Web Tokens (access and id tokens, client assertions) wherever they appear.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # Secrets in query strings and form bodies: code=..., refresh_token=...
    (re.compile(rf"(?i)\b({_SECRET_PARAMS})=[^&\s\"']+"), r"\1=" + REDACTED),
    # Secrets in JSON or repr text: "refresh_token": "..."
    (re.compile(rf"(?i)([\"']({_SECRET_PARAMS})[\"']\s*:\s*)[\"'][^\"']*[\"']"), r"\1'" + REDACTED + "'"),
    # A PEM block (a private key quoted whole).
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), REDACTED),
]


class _Registry:
    """The secrets' values (and the spellings they take in a URL or JSON), one
    pattern over all of them, rebuilt when one is added. msal's threads add
    to it too, hence the lock."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        spellings = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
        spellings = {s for s in spellings if len(s) >= MIN_SECRET_LENGTH}
        with self._lock:
            if spellings <= self._values:
                return
            self._values |= spellings
            # longest first, so that a secret containing another is replaced whole
            alternatives = "|".join(re.escape(s) for s in sorted(self._values, key=len, reverse=True))
            self._pattern = re.compile(alternatives)

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


_registry = _Registry()


def remember_secret(value: str | bytes | None) -> None:
    """Redact ``value`` from everything from now on; each of a multi-line
    secret's lines (a PEM body) as well."""
    if value is None:
        return
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return  # raw key bytes: never turned into text by us
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return
    _registry.add(value)
    for line in value.splitlines():
        line = line.strip()
        if len(line) >= MIN_SECRET_LENGTH and not line.startswith("-----"):
            _registry.add(line)


def forget_secrets() -> None:
    """Empty the registry (tests that start several daemons in one process)."""
    _registry.clear()


def redact_text(text: str) -> str:
    """``text`` with every known secret and every credential-shaped value replaced by ``[REDACTED]``."""
    text = _registry.scrub(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def short_reason(text: str | None, limit: int = REASON_LIMIT) -> str | None:
    """A reason to store or show: redacted, then at most ``limit`` characters."""
    if text is None:
        return None
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact_value(value: Any, key: str | None = None, limit: int | None = None) -> Any:
    """``value`` (text, a mapping, a list, an exception) with its secrets redacted;
    a value under a secret key (``client_secret``, ``authorization`` ...) goes whole.
    With ``limit``, every text in it is cut to a short reason too (what is stored)."""
    if key is not None and key.lower().replace("-", "_") in SECRET_KEYS:
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return redact_text(value) if limit is None else short_reason(value, limit)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k), limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v, None, limit) for v in value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


__all__ = [
    "MIN_SECRET_LENGTH",
    "REASON_LIMIT",
    "REDACTED",
    "SECRET_KEYS",
    "forget_secrets",
    "redact_text",
    "redact_value",
    "remember_secret",
    "short_reason",
]
