"""Optional encryption at rest of secrets kept in the state database.

With ``[state] encryption_key_file`` set (e.g. a systemd credential from
``LoadCredentialEncrypted=``), the token cache and the OAuth attempts are
stored as Fernet tokens (AES-128-CBC + HMAC-SHA256) under a key derived from
that file, so the database alone reveals no refresh token. Without it they
are stored as they are, protected by the file's 0600 mode.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from daemon.errors import StateError

SEALED_PREFIX = b"fernet:"


class Sealer:
    def __init__(self, key_material: bytes | None = None) -> None:
        self._fernet = None
        if key_material is not None:
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
