"""What an applied write leaves in its object's history (``state.history``):
the attributes it changed, by name (``extensionNumber``, not the schema URN),
and the values of only those people know an object by."""

from __future__ import annotations

from functools import lru_cache

import structlog

from daemon.pbx.mapping import flatten
from daemon.sync.changes import Change
from state.history import KEPT_VALUES, HistoryEntry


def current_run_id() -> str | None:
    """The run the logs are bound to (by the runner), for the entries of its writes."""
    run_id = structlog.contextvars.get_contextvars().get("run_id")
    return str(run_id) if run_id is not None else None


def history_entry(change: Change, run_id: str | None) -> HistoryEntry:
    """The entry of ``change``, applied in run ``run_id`` (:func:`current_run_id`, asked once per chunk)."""
    operation = change.operation
    if operation.action == "create" and operation.payload is not None:
        changed = {_short(path): value for path, value in flatten(operation.payload).items() if path != "externalId"}
    else:
        changed = {_short(str(op.get("path"))): op.get("value") for op in operation.operations if op.get("path")}
    values = {name: str(changed[name]) for name in KEPT_VALUES if changed.get(name) is not None}
    if change.extension and "extensionNumber" not in values:
        values["extensionNumber"] = change.extension
    return HistoryEntry(change.kind, change.graph_id, change.action, tuple(sorted(changed)), values, change.reason,
                        run_id)


@lru_cache(maxsize=1024)  # a handful of schema paths, met once per written attribute
def _short(path: str) -> str:
    """``urn:...:User:extensionNumber`` -> ``extensionNumber``; ``name.givenName`` stays."""
    return path.rsplit(":", 1)[-1] if path.startswith("urn:") else path
