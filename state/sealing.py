"""Encryption at rest of the secrets kept in the state database: the token
cache and the OAuth attempts are stored as Fernet tokens (AES-128-CBC +
HMAC-SHA256), always. The key comes from, in this order:

1. ``[state] encryption_key_file``, if set;
2. the systemd credential ``state-key`` (``LoadCredentialEncrypted=state-key:...``
   puts it in ``$CREDENTIALS_DIRECTORY``): sealed by systemd with the host's
   key or TPM, so a copy of the disk without this host reveals no token;
3. else ``state.db.key`` beside the database, created 0600 on first start:
   a database file alone (a backup, a file attached to a ticket) reveals no
   refresh token, but whoever can read the whole state directory can.

Values written before a key was used are read as they are, and sealed when
they are next written.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from daemon.errors import StateError
from daemon.redact import remember_secret

SEALED_PREFIX = b"fernet:"


class Sealer:
    def __init__(self, key_material: bytes | None = None) -> None:
        self._fernet = None
        if key_material is not None:
            remember_secret(key_material)  # whichever file or credential it came from
            key = base64.urlsafe_b64encode(hashlib.sha256(key_material).digest())
            self._fernet = Fernet(key)

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, plain: bytes) -> bytes:
        if self._fernet is None:
            return plain
        return SEALED_PREFIX + self._fernet.encrypt(plain)

    def open(self, stored: bytes) -> bytes:
        if not stored.startswith(SEALED_PREFIX):
            return stored  # written before a key was configured
        if self._fernet is None:
            raise StateError(
                "the state database holds encrypted tokens but no encryption key is configured",
                hint="set [state] encryption_key_file to the key used before",
            )
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX):])
        except InvalidToken as err:
            raise StateError(
                "the encrypted tokens in the state database do not open with the configured key",
                hint="restore the previous key file, or re-authorize the tenant",
            ) from err


CREDENTIAL_NAME = "state-key"
KEY_BYTES = 32


def key_material(configured: Path | None, state_path: Path, environ: Mapping[str, str], *, create: bool,
                 local_file: bool = True) -> bytes | None:
    """The key, from the configured file, the systemd credential, or (``local_file``) the key file beside the database."""
    if configured is not None:
        return configured.read_bytes().strip()
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        return (Path(credentials) / CREDENTIAL_NAME).read_bytes().strip()
    if not local_file:
        return None
    key_file = state_path.with_name(state_path.name + ".key")
    if not key_file.exists():
        if not create:
            return None
        try:
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it just now
        except OSError as err:
            raise StateError(f"cannot create the state key {key_file}: {err.strerror}",
                             hint="check [state] path's directory, or set [state] encryption_key_file") from err
        else:
            with os.fdopen(fd, "wb") as file:
                file.write(base64.urlsafe_b64encode(os.urandom(KEY_BYTES)))
    try:
        return key_file.read_bytes().strip()
    except OSError as err:
        raise StateError(f"cannot read the state key {key_file}: {err.strerror}") from err
