"""structlog set-up: JSON for journald or console for people, always redacted.

Every event, ours and the standard-library loggers' (aiohttp's access log,
msal), passes through :func:`redact` (the one layer of :mod:`daemon.redact`)
before it is rendered, so a token, an
authorization code, a client secret or an ``Authorization`` header never
reaches the journal, even inside a URL or an exception message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from daemon.redact import REDACTED, redact_text, redact_value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor removing secrets from every key and string value."""
    for key in list(event_dict):
        event_dict[key] = redact_value(event_dict[key], None if key == "event" else key)
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

