"""TLS trust for every outgoing connection (Graph, the authority, the PBX).

An explicit ``ssl.SSLContext`` is built from the system store plus the
tenant's ``ca_file``, so environment variables such as ``SSL_CERT_FILE`` can
neither replace nor silently override the configured trust.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path

from daemon.errors import ConfigError, ConfigProblem


@lru_cache(maxsize=32)
def client_ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """System trust plus ``ca_file``; cached per file so contexts are shared."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as err:
            raise ConfigError([ConfigProblem("ca_file", f"{ca_file}: cannot load CA bundle ({err})")]) from err
    return context
