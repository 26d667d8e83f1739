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
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8
REASON_LIMIT = 300  # a stored reason is a line, never an upstream's whole body
ISSUED_LIMIT = 50_000  # spellings of issued tokens kept (about 10,000 tokens): bounded memory in a long-lived daemon

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
    """The secrets' values, in the spellings they take in text, a URL or JSON.

    Found by an index of their first ``MIN_SECRET_LENGTH`` characters, so that
    a scan costs one lookup per character however many secrets there are (500
    tenants' tokens and key lines make tens of thousands; one regular expression
    over all of them would try each at every position). What was read from a
    file stays; what was issued (tokens) is kept in a bounded, least recently
    remembered order: the tokens a cache still holds are remembered again on
    every write of it, so only long-replaced ones drop out. msal's threads add
    to it too, hence the lock."""

    def __init__(self, issued_limit: int = ISSUED_LIMIT) -> None:
        self._static: set[str] = set()
        self._issued: OrderedDict[str, None] = OrderedDict()
        self._by_prefix: dict[str, set[str]] = {}
        self._issued_limit = issued_limit
        self._lock = threading.Lock()

    def add(self, value: str, *, issued: bool) -> None:
        spellings = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
                     json.dumps(value)[1:-1].replace("/", "\\/")}
        with self._lock:
            for spelling in (s for s in spellings if len(s) >= MIN_SECRET_LENGTH):
                if not issued:
                    self._static.add(spelling)
                elif spelling not in self._static:
                    self._issued[spelling] = None
                    self._issued.move_to_end(spelling)
                self._by_prefix.setdefault(spelling[:MIN_SECRET_LENGTH], set()).add(spelling)
            while len(self._issued) > self._issued_limit:
                oldest, _ = self._issued.popitem(last=False)
                kept = self._by_prefix.get(oldest[:MIN_SECRET_LENGTH], set())
                kept.discard(oldest)
                if not kept:
                    self._by_prefix.pop(oldest[:MIN_SECRET_LENGTH], None)

    def scrub(self, text: str) -> str:
        index = self._by_prefix
        if not index or len(text) < MIN_SECRET_LENGTH:
            return text
        parts: list[str] = []
        start = position = 0
        while position <= len(text) - MIN_SECRET_LENGTH:
            candidates = index.get(text[position:position + MIN_SECRET_LENGTH])
            found = max((c for c in list(candidates) if text.startswith(c, position)), key=len, default="") \
                if candidates else ""
            if found:  # the longest, so that a secret containing another is replaced whole
                parts += [text[start:position], REDACTED]
                position = start = position + len(found)
            else:
                position += 1
        return "".join(parts) + text[start:] if parts else text

    def clear(self) -> None:
        with self._lock:
            self._static.clear()
            self._issued.clear()
            self._by_prefix.clear()


_registry = _Registry()


def remember_secret(value: str | bytes | None, *, issued: bool = False) -> None:
    """Redact ``value`` from everything from now on; each of a multi-line
    secret's lines (a PEM body) as well. ``issued``: a token, of which only the
    most recently remembered ``ISSUED_LIMIT`` spellings are kept."""
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
    _registry.add(value, issued=issued)
    for line in value.splitlines():
        line = line.strip()
        if len(line) >= MIN_SECRET_LENGTH and line != value and not line.startswith("-----"):
            _registry.add(line, issued=issued)


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
    "ISSUED_LIMIT",
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
