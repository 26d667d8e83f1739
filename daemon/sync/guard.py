"""The mass-deletion guard, one for every kind: when a run would disable or
delete more objects of a kind than that kind's threshold, all of that kind's
deprovisions are held (not applied) until an admin approves them
(``m365sync approve``). Approved ones pass.

Thresholds: users, ``users.max_deprovisions_per_run`` or else the larger of
20 and 10 % of the synced users; groups, the same setting or else the larger
of 5 and 10 %; contacts, the larger of 100 and 10 % (contacts come and go in
numbers, so only a mass removal, such as a mailbox that stopped answering
everything, is held).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from daemon.config import TenantConfig
from daemon.sync.changes import Change, ObjectKind, Plan

FLOORS: dict[ObjectKind, int] = {"user": 20, "group": 5, "contact": 100}
SHARE = 0.10


def threshold(tenant: TenantConfig, kind: ObjectKind, synced_count: int) -> int:
    """The most deprovisions of ``kind`` one run may apply without an approval."""
    configured = tenant.users.max_deprovisions_per_run
    if configured is not None and kind in ("user", "group"):
        return configured
    return max(FLOORS.get(kind, 0), math.ceil(synced_count * SHARE))


def guard(plan: Plan, tenant: TenantConfig, synced_counts: Mapping[str, int], approved: Iterable[str],
          kinds: Iterable[ObjectKind] = tuple(FLOORS)) -> dict[str, int]:
    """Move held deprovisions of ``kinds`` from ``plan.changes`` to ``plan.held``; returns each held
    kind's threshold. A run guards its users as soon as they are planned (a held disable keeps its
    user, and so its mailbox, active), then its groups and contacts: each kind once."""
    approved_ids = set(approved)
    thresholds: dict[str, int] = {}
    for kind in kinds:
        pending = [c for c in plan.changes if c.kind == kind and c.is_deprovision and c.graph_id not in approved_ids]
        limit = threshold(tenant, kind, synced_counts.get(kind, 0))
        if len(pending) <= limit:
            continue
        thresholds[kind] = limit
        held = {id(c) for c in pending}
        plan.held += pending
        plan.changes = [c for c in plan.changes if id(c) not in held]
    return thresholds


def held_rows(changes: Iterable[Change]) -> dict[str, tuple[str, str]]:
    """graph id -> (kind, action), as the state keeps the held set."""
    return {c.graph_id: (c.kind, c.action) for c in changes}
