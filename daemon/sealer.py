"""Which key seals the state's secrets, for every process that opens the state
(the daemon and the operator commands alike); see ``state.sealing`` for where
a key comes from."""

from __future__ import annotations

import os
from collections.abc import Mapping

from daemon.config import Config, read_secret
from daemon.errors import StateError
from state.sealing import Sealer, key_material


def sealer_for(config: Config, environ: Mapping[str, str] | None = None, *, create: bool = True) -> Sealer:
    """The sealer of the state's secrets (see ``state.sealing`` for where its key comes from)."""
    configured = config.state.encryption_key_file
    if configured is not None:  # read once, with the checks (mode, readable) of every secret file
        return Sealer(read_secret(configured).encode())
    environ = os.environ if environ is None else environ
    if config.state.shared:  # every daemon must unseal what any other sealed: no key of one host's own
        key = key_material(None, config.state.path, environ, create=False, local_file=False)
        if key is None:
            raise StateError("a shared PostgreSQL state needs one key for every daemon",
                             hint="set [state] encryption_key_file, or give the unit the state-key credential")
        return Sealer(key)
    return Sealer(key_material(None, config.state.path, environ, create=create))
