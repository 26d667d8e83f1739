"""The user planner: (stored Graph copies, pushed state, settings, PBX
inventory) -> the smallest set of SCIM writes. Pure: no I/O, unit-testable,
and the same plan feeds a real run and a dry run.

Users are fed one at a time (``add``) so the caller can stream them from
the state database; new users are numbered at ``finish`` in
userPrincipalName order, so first numbering is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daemon.config import TenantConfig
from daemon.pbx.mapping import patch_operations, user_payload
from daemon.pbx.schema import PBX_USER
from daemon.sync.numbering import NumberAllocator, RangeExhausted
from daemon.sync.scope import decide, matches, sso_flags
from state.sync_store import GraphCopy, SyncedRow

DAY = 86400.0
PHOTO_PLACEHOLDER = "graph-photo:"  # replaced by the photo's data: URI when sent

ActionKind = Literal["create", "update", "enable", "disable", "delete", "fail", "quarantined", "track"]
DEPROVISIONS = ("disable", "delete")
APPLY_ORDER: dict[str, int] = {"update": 0, "create": 0, "enable": 1, "disable": 1, "delete": 2}


@dataclass(frozen=True)
class InventoryEntry:
    pbx_id: str
    extension: str | None


@dataclass(frozen=True)
class PlanInputs:
    """Everything the planner reads besides the users themselves."""

    tenant: TenantConfig
    now: float
    group_members: frozenset[str] = frozenset()
    pbx_numbers: frozenset[str] = frozenset()  # every extension on the PBX, users and groups
    pbx_by_external_id: Mapping[str, InventoryEntry] = field(default_factory=dict)
    allocations: tuple[tuple[str, str, str, float | None], ...] = ()  # number, kind, owner, released_at
    photos: Mapping[str, str | None] = field(default_factory=dict)  # user id -> mediaEtag (None: no photo)
    approved_deprovisions: frozenset[str] = frozenset()
    shared_mailboxes: frozenset[str] = frozenset()
    synced_count: int = 0


@dataclass(frozen=True)
class UserAction:
    kind: ActionKind
    graph_id: str
    upn: str
    reason: str
    extension: str | None = None
    payload: dict[str, Any] | None = None
    operations: tuple[dict[str, Any], ...] = ()
    pbx_id: str | None = None
    etag: str | None = None
    recovered: bool = False  # on the PBX but not recorded (a crash between write and record)
    active: bool | None = None
    out_of_scope_since: float | None = None
    photo_etag: str | None = None
    fingerprint: str = ""

    @property
    def writes(self) -> bool:
        return self.kind in APPLY_ORDER

    def describe(self) -> str:
        changed = ", ".join(str(op["path"]) for op in self.operations)
        number = f" ext {self.extension}" if self.extension else ""
        return f"{self.kind} {self.upn}{number}" + (f" [{changed}]" if changed else "") + f" ({self.reason})"


@dataclass
class UserPlan:
    actions: list[UserAction] = field(default_factory=list)
    held: list[UserAction] = field(default_factory=list)
    unmatched_selected: list[str] = field(default_factory=list)
    threshold: int = 0

    def ordered_writes(self) -> list[UserAction]:
        """Updates and creates, then enables and disables, deletes last."""
        writes = [a for a in self.actions if a.writes]
        return sorted(writes, key=lambda a: APPLY_ORDER[a.kind])

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)


def settings_fingerprint(tenant: TenantConfig) -> str:
    relevant = {
        "users": tenant.users.model_dump(mode="json"),
        "admin": tenant.sign_in_as_administrator.model_dump(mode="json"),
        "standard": tenant.sign_in_as_standard_user.model_dump(mode="json"),
        "groups": sorted(tenant.groups),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def deprovision_threshold(tenant: TenantConfig, synced_count: int) -> int:
    """The most disables + deletes one run may apply without an approval."""
    configured = tenant.users.max_deprovisions_per_run
    return configured if configured is not None else max(20, math.ceil(synced_count * 0.10))


class UserPlanner:
    def __init__(self, inputs: PlanInputs) -> None:
        self.inputs = inputs
        self.tenant = inputs.tenant
        self.settings_fp = settings_fingerprint(inputs.tenant)
        self.plan = UserPlan()
        self._new: list[tuple[str, GraphCopy, str]] = []  # upn (lower-case), copy, fingerprint
        self._matched: set[str] = set()
        owners: dict[str, str] = {}
        live: dict[str, str] = {}  # number -> owner key, for numbers allocated and not released
        unavailable = set(inputs.pbx_numbers)
        for number, kind, owner, released_at in inputs.allocations:
            key = f"{kind}:{owner}"
            if released_at is None:
                unavailable.add(number)
                live[number] = key
                owners[key] = number
            else:
                owners.setdefault(key, number)
                if inputs.now - released_at < self.tenant.users.extension_reuse_days * DAY:
                    unavailable.add(number)
        self._owner_numbers = owners
        self._live = live
        self._unavailable = unavailable

    # --- per user ---

    def add(self, copy: GraphCopy | None, synced: SyncedRow | None) -> None:
        if not self.tenant.users.enabled:
            return  # users.enabled = false: nothing is created, changed or removed
        if copy is None:
            return  # pushed but no Graph copy: nothing known to act on
        data = copy.data
        upn = str(data.get("userPrincipalName") or copy.id)
        for reference in self.tenant.users.selected_users:
            if matches(data, [reference]):
                self._matched.add(reference)
        fingerprint = hashlib.sha256(
            json.dumps([data, copy.removed, self.settings_fp], sort_keys=True).encode()
        ).hexdigest()[:16]
        if synced is not None and synced.quarantine_fingerprint == fingerprint:
            self._emit(UserAction("quarantined", copy.id, upn, f"quarantined after repeated failures: {synced.last_error}"))
            return
        decision = decide(data, copy.removed, self.tenant, self.inputs.group_members, self.inputs.shared_mailboxes)
        recovered = synced is None or synced.pbx_id is None
        entry = self.inputs.pbx_by_external_id.get(copy.id)
        pbx_id = synced.pbx_id if synced is not None and synced.pbx_id else (entry.pbx_id if entry else None)
        if pbx_id is None:
            if decision.active:
                self._new.append((upn.lower(), copy, fingerprint))
            return
        number = self._number_of(copy.id, synced, entry)
        if copy.removed == "deleted":
            self._emit(UserAction("delete", copy.id, upn, decision.rule, number, pbx_id=pbx_id, fingerprint=fingerprint))
            return
        since = None
        if not decision.in_scope:
            since = synced.out_of_scope_since if synced is not None and synced.out_of_scope_since else self.inputs.now
            days = self.tenant.users.delete_after_days
            if days and self.inputs.now - since >= days * DAY:
                reason = f"{decision.rule}; out of scope for more than {days} days"
                self._emit(UserAction("delete", copy.id, upn, reason, number, pbx_id=pbx_id, fingerprint=fingerprint))
                return
        desired = self._payload(copy, number or "", decision.active, synced)
        photo_etag = self._photo_etag(copy.id, synced)
        previous = synced.payload if synced is not None and not recovered else None
        operations = tuple(patch_operations(previous, desired)) if previous is not None else ()
        was_active = synced.active if synced is not None else None
        if recovered:
            kind: ActionKind = "update"
            reason = "on the PBX but not recorded (recovering after an interruption)"
        elif not operations:
            if synced is not None and synced.out_of_scope_since != since:
                self._emit(UserAction("track", copy.id, upn, decision.rule, number, pbx_id=pbx_id, payload=desired,
                                      active=decision.active, out_of_scope_since=since, photo_etag=photo_etag,
                                      etag=synced.etag, fingerprint=fingerprint))
            return
        elif was_active and not decision.active:
            kind, reason = "disable", decision.rule
        elif was_active is False and decision.active:
            kind, reason = "enable", decision.rule
        else:
            kind, reason = "update", "changed in Entra ID or in the settings"
        self._emit(UserAction(
            kind, copy.id, upn, reason, number, payload=desired, operations=operations, pbx_id=pbx_id,
            etag=synced.etag if synced is not None else None, recovered=recovered, active=decision.active,
            out_of_scope_since=since, photo_etag=photo_etag, fingerprint=fingerprint,
        ))

    def _number_of(self, user_id: str, synced: SyncedRow | None, entry: InventoryEntry | None) -> str | None:
        if synced is not None and synced.payload:
            number = synced.payload.get(PBX_USER, {}).get("extensionNumber")
            if number:
                return str(number)
        if entry is not None and entry.extension:
            return entry.extension
        return self._owner_numbers.get(f"user:{user_id}")

    def _photo_etag(self, user_id: str, synced: SyncedRow | None) -> str | None:
        if not self.tenant.users.sync_photo:
            return None
        if user_id in self.inputs.photos:
            return self.inputs.photos[user_id]
        return synced.photo_etag if synced is not None else None  # not checked this run: unchanged

    def _payload(self, copy: GraphCopy, number: str, active: bool, synced: SyncedRow | None) -> dict[str, Any]:
        admin, standard = sso_flags(copy.data, self.tenant)
        etag = self._photo_etag(copy.id, synced)
        return user_payload(
            copy.data,
            extension_number=number,
            active=active,
            sign_in_as_administrator=admin,
            sign_in_as_standard_user=standard,
            photo=f"{PHOTO_PLACEHOLDER}{etag}" if etag else None,
        )

    def _emit(self, action: UserAction) -> None:
        self.plan.actions.append(action)

    # --- the whole run ---

    def finish(self) -> UserPlan:
        """Number the new users (in UPN order), apply the guard, report unmatched entries."""
        users = self.tenant.users
        if users.enabled and users.starting_extension_number:
            allocator = NumberAllocator(users.starting_extension_number, users.last_extension_number, self._unavailable)
            for _, copy, fingerprint in sorted(self._new, key=lambda item: (item[0], item[1].id)):
                try:
                    number = self._own_number(copy.id, allocator) or allocator.take()
                except RangeExhausted as err:
                    self._emit(UserAction("fail", copy.id, copy.data.get("userPrincipalName", copy.id), str(err),
                                          fingerprint=fingerprint))
                    continue
                decision = decide(copy.data, copy.removed, self.tenant, self.inputs.group_members, self.inputs.shared_mailboxes)
                payload = self._payload(copy, number, True, None)
                self._emit(UserAction("create", copy.id, str(copy.data.get("userPrincipalName") or copy.id), decision.rule,
                                      number, payload=payload, active=True, photo_etag=self._photo_etag(copy.id, None),
                                      fingerprint=fingerprint))
        self.plan.unmatched_selected = [r for r in users.selected_users if r not in self._matched] if users.enabled else []
        self._guard()
        return self.plan

    def _own_number(self, user_id: str, allocator: NumberAllocator) -> str | None:
        """The number this user held before (allocated before a crash, or before a
        deletion), if nobody else has it now."""
        key = f"user:{user_id}"
        number = self._owner_numbers.get(key)
        if number is None or number in self.inputs.pbx_numbers or self._live.get(number, key) != key:
            return None
        allocator.claim(number)
        return number

    def _guard(self) -> None:
        """Mass-deletion guard: too many disables + deletes are held, not applied."""
        self.plan.threshold = deprovision_threshold(self.tenant, self.inputs.synced_count)
        approved = self.inputs.approved_deprovisions
        pending = [a for a in self.plan.actions if a.kind in DEPROVISIONS and a.graph_id not in approved]
        if len(pending) <= self.plan.threshold:
            return
        held = {id(a) for a in pending}
        self.plan.held = pending
        self.plan.actions = [a for a in self.plan.actions if id(a) not in held]


def plan_users(inputs: PlanInputs, users: Iterable[tuple[GraphCopy | None, SyncedRow | None]]) -> UserPlan:
    """Plan from an iterable of (Graph copy, pushed state) pairs (tests, property checks)."""
    planner = UserPlanner(inputs)
    for copy, synced in users:
        planner.add(copy, synced)
    return planner.finish()


