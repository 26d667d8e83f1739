"""Whether a planner tries an object that failed before: a quarantined one
waits until its inputs change; any other failed one until its retry time
(1 h, doubling to 24 h: ``state.pushed.retry_delay``) or until its inputs
change, whichever comes first. Inputs are named by a fingerprint of what the
object's write is made from (its Graph copy and the settings)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from state.pushed import SyncedRow

HeldBack = Literal["quarantined", "waiting"]


def fingerprint(*parts: Any) -> str:
    """A short, stable name for an object's inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def held_back(synced: SyncedRow | None, current: str, now: float) -> HeldBack | None:
    """Why the object is not tried this run, or None to try it."""
    if synced is None or not synced.failures:
        return None
    if synced.quarantine_fingerprint and synced.quarantine_fingerprint == current:
        return "quarantined"
    if synced.retry_at is not None and now < synced.retry_at and synced.failed_fingerprint == current:
        return "waiting"
    return None
