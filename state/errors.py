"""The state layer's errors: the SQLite (or any driver's) exceptions become
these at the store's boundary, so a full disk or a damaged file ends a run
with a readable reason instead of a driver traceback."""

from __future__ import annotations

from daemon.errors import SchemaTooNew, StateError


class StateWriteFailed(StateError):
    """A write to the state database failed (full disk, I/O error, locked too long)."""


class StateReadFailed(StateError):
    """A read from the state database failed."""


__all__ = ["SchemaTooNew", "StateError", "StateReadFailed", "StateWriteFailed"]
