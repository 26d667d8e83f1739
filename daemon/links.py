"""Whose URLs we send a bearer token to: only the configured server's origin.

Graph's answers carry links to follow (``@odata.nextLink``, ``@odata.deltaLink``)
and the PBX names where it put what we created (``/Bulk`` ``location``). Both
arrive from the network and are stored, so neither is trusted: a link is
used only when its scheme, host and port are those of the configured base
URL (the cloud's Graph host, ``pbx.scim_url``). A link to anywhere else,
with a userinfo part, or with a port that is not a number, is refused.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an absolute http(s) URL; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, a malformed IPv6 host
        return None
    scheme, host = parts.scheme.lower(), parts.hostname  # each property parses the netloc again: read once
    if scheme not in DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    return scheme, host.lower().rstrip("."), port if port is not None else DEFAULT_PORTS[scheme]


@lru_cache(maxsize=64)
def _configured_origin(base_url: str) -> tuple[str, str, int] | None:
    """The origin of a configured base URL, parsed once: a first run checks one link per created object."""
    return origin(base_url)


def same_origin(url: str, base_url: str) -> bool:
    """True when ``url`` is an absolute URL on ``base_url``'s scheme, host and port."""
    theirs = origin(url)
    return theirs is not None and theirs == _configured_origin(base_url)


def shown_origin(url: str) -> str:
    """The origin of ``url`` for a message (never its path or query, which may hold tokens)."""
    found = origin(url)
    if found is None:
        return "a URL that is not an absolute http(s) address"
    scheme, host, port = found
    return f"{scheme}://{host}:{port}"
