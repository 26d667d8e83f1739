"""Which users a run plans: all of them, or only what changed and what is due.

A run plans **every** user (a full plan, as before) when

- its users read was a full round (the first run, a 410 resync after the
  delta state expired, a lost state database);
- the daily reconciliation is due (the PBX inventory is read at least every
  24 h, ``tenant.RECONCILE_SECONDS``; with the default daily ``sync_time``
  that is the scheduled run), so whatever this module missed is caught daily;
- every photo is checked (``sync --photos``);
- the **plan inputs** changed. ``plan_inputs_fingerprint`` hashes what the
  user planner reads besides the users themselves: the mapping code
  (``plan_users.MAPPING_CODE``, new with a version that maps differently),
  the settings planning reads (``users.*`` including
  ``starting_extension_number``, the sign-in sections, ``groups`` and their
  numbering, the contacts, shared mailbox and events switches: a kind turned
  on or off), who the configured groups hold (under ``users.sync_type =
  "INCLUDE"``, the only scope they decide), and which
  users are shared mailboxes. It is stored per tenant (the ``plan-inputs``
  marker) only once a plan made from those inputs was applied, so a reload
  that changes a mapping setting, a membership change, a new version, or a
  run that crashed before its end plans everything on the next run.

Otherwise a run plans the users whose copy was merged or removed since the
last applied plan (``dirty``, cleared at the end of the run), plus those
whose timers are due, each found by an index (``state.due``): failed users
whose retry time came, users out of scope longer than
``users.delete_after_days``, users whose photo was checked this run,
journaled creates and held deprovisions. Every other user's inputs are as
they were when its payload was last made, so planning it would change
nothing. Failed users not due are counted as waiting or quarantined from
the same index, without reading their copies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from daemon.config import TenantConfig
from daemon.sync.plan_users import DAY, MAPPING_CODE, settings_fingerprint
from daemon.sync.snapshot import Snapshot
from state.sync_store import SyncStore

PLAN_INPUTS = "plan-inputs"  # marker: the fingerprint of the inputs of the last applied plan


def plan_inputs_fingerprint(tenant: TenantConfig, members: Iterable[str], shared: Iterable[str]) -> str:
    """What every user's plan depends on besides the user (see the module docstring)."""
    relevant = {
        "code": MAPPING_CODE,
        "settings": settings_fingerprint(tenant),
        "groups_numbers": tenant.groups_starting_extension_number,
        "kinds": [tenant.personal_contacts.enabled, tenant.shared_mailbox.model_dump(mode="json"),
                  tenant.events.enabled],
        # group members decide the scope only under INCLUDE; otherwise a membership change plans its groups alone
        "members": hashlib.sha256("\n".join(sorted(members) if tenant.users.sync_type == "INCLUDE" else [])
                                  .encode()).hexdigest(),
        "shared": hashlib.sha256("\n".join(sorted(shared)).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class UserSelection:
    """The users a run plans (``full``: every one), and the failed ones left for later."""

    full: bool
    ids: frozenset[str] = frozenset()
    held_back: tuple[tuple[str, bool], ...] = field(default=())  # (graph id, quarantined), not planned


async def needs_full_plan(tenant: TenantConfig, sync_store: SyncStore, fingerprint: str, *,
                          reconcile: bool, all_photos: bool) -> bool:
    if reconcile or all_photos:
        return True
    return await sync_store.value(tenant.name, PLAN_INPUTS) != fingerprint


async def select_users(tenant: TenantConfig, sync_store: SyncStore, snapshot: Snapshot, *, full: bool,
                       changed: frozenset[str]) -> UserSelection:
    """Changed users (``changed``: the run's dirty users) plus those whose timers are due, each set from an index."""
    if full or not tenant.users.enabled:  # users off: the planner touches nobody either way
        return UserSelection(full)
    name, now = tenant.name, snapshot.now
    ids = set(changed)
    days = tenant.users.delete_after_days
    if days:
        ids |= await sync_store.out_of_scope_before(name, "user", now - days * DAY)
    ids |= set(snapshot.photos)
    return await due_selection(tenant, sync_store, snapshot, "user", ids)


async def due_selection(tenant: TenantConfig, sync_store: SyncStore, snapshot: Snapshot, kind: str,
                        ids: set[str], *, backoff: bool = True) -> UserSelection:
    """``ids`` (the changed objects of ``kind``) plus those whose timers are due: failed objects whose retry
    time came (every failed one without ``backoff``), journaled creates and held deprovisions; the failed
    ones left for later are held back."""
    held_back: list[tuple[str, bool]] = []
    for graph_id, retry_at, quarantined in await sync_store.failed_objects(tenant.name, kind):
        if not backoff or (not quarantined and retry_at <= snapshot.now):
            ids.add(graph_id)
        elif graph_id not in ids:
            held_back.append((graph_id, quarantined))
    ids |= snapshot.pending_creates.get(kind, frozenset())
    ids |= {graph_id for graph_id, (held_kind, _, _) in snapshot.held.items() if held_kind == kind}
    return UserSelection(False, frozenset(ids), tuple(entry for entry in held_back if entry[0] not in ids))
