"""TLS trust for every outgoing connection (Graph, the authority, the PBX).

With a tenant's ``ca_file``, an explicit ``ssl.SSLContext`` is built from the
system store plus that file, so environment variables such as ``SSL_CERT_FILE``
can neither replace nor silently override the configured trust. Without one,
connections take aiohttp's default verification, the same system store.
"""

from __future__ import annotations

import ssl
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    import requests


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


def transport_ssl_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """The context of a tenant's Graph and PBX connections; None (aiohttp's default verification)
    without a ``ca_file``. aiohttp builds that default with ``ssl.create_default_context()`` at its
    import, the same system trust as :func:`client_ssl_context` without a file, so parsing the
    system CA bundle again (about a tenth of a no-change ``sync --once``'s CPU) would change nothing."""
    return client_ssl_context(ca_file) if ca_file is not None else None


@lru_cache(maxsize=32)
def ca_bundle_path(ca_file: Path | None = None) -> str | bool:
    """A CA bundle file for ``requests`` (MSAL): the system store plus ``ca_file``.

    ``requests`` lets ``REQUESTS_CA_BUNDLE`` and friends override a session's
    ``verify`` unless ``trust_env`` is off, and takes a file rather than an
    ``SSLContext``, so the combined bundle is written once per process.
    """
    if ca_file is None:
        return True
    paths = ssl.get_default_verify_paths()
    system = next((p for p in (paths.cafile, paths.openssl_cafile) if p and Path(p).is_file()), None)
    parts = [Path(system).read_bytes()] if system else []
    try:
        parts.append(ca_file.read_bytes())
    except OSError as err:
        raise ConfigError([ConfigProblem("ca_file", f"{ca_file}: cannot read CA bundle ({err.strerror})")]) from err
    folder = Path(tempfile.mkdtemp(prefix="m365sync-ca-"))
    bundle = folder / "ca-bundle.pem"
    bundle.write_bytes(b"\n".join(parts))
    return str(bundle)


def msal_http_client(ca_file: Path | None = None) -> requests.Session:
    """The requests session MSAL uses: environment ignored, configured trust only."""
    import requests  # MSAL's transport: imported with MSAL, when a token must be fetched

    session = requests.Session()
    session.trust_env = False  # no proxy or CA variables from the environment
    session.verify = ca_bundle_path(ca_file)
    return session
