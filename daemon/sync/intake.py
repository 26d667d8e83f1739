"""Where every read hands Graph's objects to the state: each item is parsed
into its record (``graph.records``) first, the valid ones are merged into
the stored copies, and each rejected one is recorded as a failed object
(``synced_objects.failures``/``last_error``, shown by ``status`` and
``explain``) while the rest of the page goes on. A rejected object keeps its
stored copy as it was; it is read again when it next changes in Graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from daemon.graph.records import RecordKind, Rejected, parse_page
from daemon.logging import get_logger
from state.pushed import Failed
from state.sync_store import SyncStore

log = get_logger(__name__)

REJECTED_PREFIX = "rejected from Graph: "


def describe(rejected: Rejected) -> str:
    """The report's line: who, and why."""
    return f"{rejected.label}: {REJECTED_PREFIX}{rejected.reason}"


def unidentified(kind: RecordKind, count: int) -> Rejected:
    """Items a page carried without a usable id (dropped as the page was read): they cannot be
    recorded one by one, so the run reports how many there were."""
    return Rejected(kind, None, f"{count} {kind}(s) without an id", "no usable id")


async def record_rejected(sync_store: SyncStore, tenant: str, rejected: Sequence[Rejected]) -> None:
    """Each rejected object with an id counts one failure (events have no row of their own: the
    busy list of their mailbox is what is pushed)."""
    entries = [Failed(r.kind, r.id, f"{REJECTED_PREFIX}{r.reason}", f"rejected:{r.reason}")
               for r in rejected if r.id is not None and r.kind != "event"]
    for r in rejected:
        log.error("Graph object rejected", tenant=tenant, kind=r.kind, object=r.label, problem=r.reason)
    if entries:
        await sync_store.apply_bookkeeping(tenant, entries)


async def merge_checked(sync_store: SyncStore, tenant: str, kind: RecordKind, items: Sequence[Any], *,
                        owner: str | None = None, folder: str | None = None) -> list[Rejected]:
    """Merge one page's valid items; record and return the rejected ones."""
    kept, rejected = parse_page(kind, list(items))
    await sync_store.merge_changes(tenant, kind, kept, owner=owner, folder=folder)
    await record_rejected(sync_store, tenant, rejected)
    return rejected
