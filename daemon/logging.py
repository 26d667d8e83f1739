"""structlog set-up: JSON for journald or console for people, always redacted.

Every event, ours and the standard-library loggers' (aiohttp's access log,
msal), passes through :func:`redact` before it is rendered, so a token, an
authorization code, a client secret or an ``Authorization`` header never
reaches the journal, even inside a URL or an exception message.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Keys whose values are secret wherever they appear (compared lower-cased,
# with '-' read as '_').
SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "code_verifier",
        "client_secret",
        "client_assertion",
        "authorization",
        "password",
        "secret",
        "token",
        "admin_token",
        "bearer_token",
        "private_key",
        "cookie",
        "set_cookie",
    }
)

_SECRET_PARAMS = (
    "access_token|refresh_token|id_token|code|code_verifier|client_secret"
    "|client_assertion|password|session_state"
)
_PATTERNS = [
    # Authorization headers and bare bearer/basic credentials.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # JSON Web Tokens (access and id tokens) wherever they appear.
    (
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
        REDACTED,
    ),
    # Secrets in query strings and form bodies: code=..., refresh_token=...
    (re.compile(rf"(?i)\b({_SECRET_PARAMS})=[^&\s\"']+"), r"\1=" + REDACTED),
    # Secrets in JSON or repr text: "refresh_token": "..."
    (
        re.compile(rf"(?i)([\"']({_SECRET_PARAMS})[\"']\s*:\s*)[\"'][^\"']*[\"']"),
        r"\1'" + REDACTED + "'",
    ),
]


def redact_text(text: str) -> str:
    """``text`` with credentials inside it replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and key.lower().replace("-", "_") in SECRET_KEYS:
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(None, v) for v in value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor removing secrets from every key and string value."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(None if key == "event" else key, event_dict[key])
    return event_dict


def _redact_rendered(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Last safety net: formatted tracebacks are redacted after rendering them."""
    for key in ("exception", "stack"):
        if isinstance(event_dict.get(key), str):
            event_dict[key] = redact_text(event_dict[key])
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog and standard logging to ``stream`` (stderr) as JSON or console."""
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_rendered,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what we log per request (and would carry the
    # OAuth callback's query); aiosqlite logs statement parameters at debug
    # level, tokens included; urllib3 logs request URLs. Keep them at warnings.
    for noisy in ("aiohttp.access", "aiosqlite", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def bind(**values: Any) -> None:
    """Bind ``tenant``/``run_id`` (or anything) to every event of this task."""
    structlog.contextvars.bind_contextvars(**values)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


__all__ = [
    "REDACTED",
    "bind",
    "configure_logging",
    "get_logger",
    "redact",
    "redact_text",
    "unbind",
]

