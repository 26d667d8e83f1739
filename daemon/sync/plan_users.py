"""The user planner: (stored Graph copies, pushed state, settings, snapshot)
-> the smallest set of SCIM writes, as :class:`~daemon.sync.changes.Change`s.
Pure: no I/O, unit-testable, and the same plan feeds a real run and a dry run.

Users are fed one at a time (``add``) so the caller can stream them from the
state database; new users are numbered at ``finish`` in userPrincipalName
order, so first numbering is deterministic. The planner also says which users
will be active on the PBX after the run (their mailboxes feed the contacts).

A create is planned without its payload: the planner keeps only the new
user's id, name and number, and :meth:`UserPlanner.complete_creates` builds
each applied chunk's payloads from the stored copies. A first run of 100k
users so holds ids, not 100k Graph copies and SCIM payloads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daemon.config import TenantConfig
from daemon.errors import RangeExhausted
from daemon.pbx.mapping import patch_operations, payload_hash, user_payload
from daemon.pbx.schema import PBX_USER
from daemon.pbx.types import PbxOperation
from daemon.sync.changes import Change, Phase, Plan
from daemon.sync.numbering import Allocation, NumberPool
from daemon.sync.scope import decide, matches, sso_flags
from daemon.sync.snapshot import InventoryEntry
from state.pushed import Pushed, Remembered, Removed, Tracked
from state.sync_store import GraphCopy, SyncedRow

DAY = 86400.0


def _mapping_code() -> str:
    """A fingerprint of the code that turns a Graph user into a payload (this module and the
    mapping): a new version that maps differently makes every input hash new, so nothing is skipped."""
    from daemon.pbx import mapping

    digest = hashlib.sha256()
    for module_file in (__file__, mapping.__file__):
        try:
            digest.update(Path(module_file).read_bytes())
        except OSError:  # no source beside the bytecode: the version stands in for it
            from daemon import __version__

            digest.update(__version__.encode())
    return digest.hexdigest()[:16]


MAPPING_CODE = _mapping_code()
PHOTO_PLACEHOLDER = "graph-photo:"  # replaced by the photo's data: URI when sent
PHASES = {"update": Phase.WRITE, "create": Phase.WRITE, "enable": Phase.WRITE, "disable": Phase.DISABLE,
          "delete": Phase.USER_DELETE}


@dataclass(frozen=True)
class PlanInputs:
    """Everything the user planner reads besides the users themselves."""

    tenant: TenantConfig
    now: float
    group_members: frozenset[str] = frozenset()
    pbx_numbers: frozenset[str] = frozenset()  # every extension on the PBX, users and groups
    pbx_by_external_id: Mapping[str, InventoryEntry] = field(default_factory=dict)
    allocations: tuple[Allocation, ...] = ()
    photos: Mapping[str, str | None] = field(default_factory=dict)  # user id -> mediaEtag (None: no photo)
    shared_mailboxes: frozenset[str] = frozenset()
    pending_creates: frozenset[str] = frozenset()  # journaled creates that may exist on the PBX


@dataclass(frozen=True, slots=True)
class NewUser:
    """A user to create, as kept until ``finish`` numbers it: no Graph data."""

    sort_key: tuple[str, str]  # (lower-case UPN, id): first numbering is in UPN order
    upn: str
    rule: str
    fingerprint: str


def is_deferred_create(change: Change) -> bool:
    """A user create whose payload is built when its chunk is applied."""
    return change.kind == "user" and change.operation.action == "create" and change.operation.payload is None


def settings_fingerprint(tenant: TenantConfig) -> str:
    relevant = {
        "users": tenant.users.model_dump(mode="json"),
        "admin": tenant.sign_in_as_administrator.model_dump(mode="json"),
        "standard": tenant.sign_in_as_standard_user.model_dump(mode="json"),
        "groups": sorted(tenant.groups),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


class UserPlanner:
    def __init__(self, inputs: PlanInputs, pool: NumberPool | None = None, *, track_active: bool = True) -> None:
        self.inputs = inputs
        self.tenant = inputs.tenant
        self.settings_fp = settings_fingerprint(inputs.tenant)
        self.plan = Plan()
        self.pool = pool or NumberPool(inputs.pbx_numbers, inputs.allocations, inputs.now,
                                       inputs.tenant.users.extension_reuse_days)
        self.active: dict[str, tuple[str, str | None]] = {}  # user id -> (UPN, PBX id or None if created now)
        self.track_active = track_active  # only personal contacts need the list (it grows with the tenant)
        self._new: list[NewUser] = []
        self._matched: set[str] = set()
        self.unmatched_selected: list[str] = []
        self._sso_matched: set[tuple[str, str]] = set()

    # --- per user ---

    def add(self, copy: GraphCopy | None, synced: SyncedRow | None) -> None:
        if not self.tenant.users.enabled:
            return  # users.enabled = false: nothing is created, changed or removed
        if copy is None:
            return  # pushed but no Graph copy: nothing known to act on
        data = copy.data
        upn = str(data.get("userPrincipalName") or copy.id)
        self._note_matches(data)
        if synced is not None and synced.quarantine_fingerprint and synced.quarantine_fingerprint == self._fingerprint(copy):
            self.plan.quarantined.append(("user", upn))
            if synced.active and synced.pbx_id and self.track_active:
                self.active[copy.id] = (upn, synced.pbx_id)  # still on the PBX as it was
            return
        decision = decide(data, copy.removed, self.tenant, self.inputs.group_members, self.inputs.shared_mailboxes)
        recovered = synced is None or synced.pbx_id is None
        entry = self.inputs.pbx_by_external_id.get(copy.id)
        pbx_id = synced.pbx_id if synced is not None and synced.pbx_id else (entry.pbx_id if entry else None)
        if pbx_id is None:
            if decision.active:
                self._new.append(NewUser((upn.lower(), copy.id), upn, decision.rule, self._fingerprint(copy)))
            return
        number = self._number_of(copy.id, synced, entry)
        if copy.removed == "deleted":
            self._delete(copy.id, upn, decision.rule, pbx_id, self._fingerprint(copy), purge_copy=True)
            return
        since = None
        if not decision.in_scope:
            since = synced.out_of_scope_since if synced is not None and synced.out_of_scope_since else self.inputs.now
            days = self.tenant.users.delete_after_days
            if days and self.inputs.now - since >= days * DAY:
                self._delete(copy.id, upn, f"{decision.rule}; out of scope for more than {days} days", pbx_id,
                             self._fingerprint(copy), purge_copy=False)
                return
        if decision.active and self.track_active:
            self.active[copy.id] = (upn, pbx_id)
        photo_etag = self._photo_etag(copy.id, synced)
        inputs = self._inputs_hash(copy, number or "", decision.active, photo_etag)
        if not recovered and synced is not None and inputs is not None and synced.input_hash == inputs:
            # Made from the same inputs as what was pushed: the payload is the same, nothing to build.
            if synced.out_of_scope_since != since:
                self.plan.bookkeeping.append(Tracked("user", copy.id, since))
            return
        desired = self._payload(copy, number or "", decision.active, synced)
        desired_hash = payload_hash(desired)
        previous = synced.payload if synced is not None and not recovered else None
        unchanged = previous is not None and synced is not None and synced.payload_hash == desired_hash
        operations = tuple(patch_operations(previous, desired)) if previous is not None and not unchanged else ()
        was_active = synced.active if synced is not None else None
        pushed = Pushed("user", copy.id, pbx_id, desired, desired_hash, synced.etag if synced else None,
                        decision.active, since, photo_etag, number, inputs)
        if recovered:
            action, reason = "update", "on the PBX but not recorded (recovering after an interruption)"
        elif not operations:
            if synced is not None and synced.out_of_scope_since != since:
                self.plan.bookkeeping.append(Tracked("user", copy.id, since))
            if inputs is not None and synced is not None and synced.input_hash != inputs:
                self.plan.bookkeeping.append(Remembered("user", copy.id, inputs))
            return
        elif was_active and not decision.active:
            action, reason = "disable", decision.rule
        elif was_active is False and decision.active:
            action, reason = "enable", decision.rule
        else:
            action, reason = "update", "changed in Entra ID or in the settings"
        operation = PbxOperation("update", "User", copy.id, payload=desired, operations=operations, pbx_id=pbx_id,
                                 etag=synced.etag if synced is not None else None, maybe_applied=recovered)
        self.plan.changes.append(Change("user", action, PHASES[action], operation, pushed, upn, reason,
                                        self._fingerprint(copy)))

    def _inputs_hash(self, copy: GraphCopy, number: str, active: bool, photo_etag: str | None) -> str | None:
        """Everything a user's payload is made from, hashed: the copy's stored text, the settings,
        the number, the state, the photo, and this version's mapping code. None for a copy not
        read from the state (nothing to compare with)."""
        if copy.text is None:
            return None
        inputs = "\0".join((MAPPING_CODE, self.settings_fp, copy.text, str(copy.removed), number, str(active),
                             str(photo_etag)))
        return hashlib.sha256(inputs.encode()).hexdigest()[:32]

    def _fingerprint(self, copy: GraphCopy) -> str:
        """What a quarantine is bound to: the user's Graph data and the settings (computed only when needed)."""
        return hashlib.sha256(json.dumps([copy.data, copy.removed, self.settings_fp], sort_keys=True).encode()).hexdigest()[:16]

    def _delete(self, user_id: str, upn: str, reason: str, pbx_id: str, fingerprint: str, *, purge_copy: bool) -> None:
        operation = PbxOperation("delete", "User", user_id, pbx_id=pbx_id)
        self.plan.changes.append(Change("user", "delete", Phase.USER_DELETE, operation,
                                        Removed("user", user_id, purge_copy), upn, reason, fingerprint))

    def _note_matches(self, data: Mapping[str, Any]) -> None:
        for reference in self.tenant.users.selected_users:
            if matches(data, [reference]):
                self._matched.add(reference)
        for section, settings in (("sign_in_as_administrator", self.tenant.sign_in_as_administrator),
                                  ("sign_in_as_standard_user", self.tenant.sign_in_as_standard_user)):
            for reference in settings.selected_users:
                if matches(data, [reference]):
                    self._sso_matched.add((section, reference))

    def _number_of(self, user_id: str, synced: SyncedRow | None, entry: InventoryEntry | None) -> str | None:
        if synced is not None and synced.payload:
            number = synced.payload.get(PBX_USER, {}).get("extensionNumber")
            if number:
                return str(number)
        if entry is not None and entry.extension:
            return entry.extension
        return self.pool.owner_numbers.get(f"user:{user_id}")

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

    # --- the whole run ---

    def finish(self) -> Plan:
        """Number the new users (in UPN order) and report settings that select nobody."""
        users = self.tenant.users
        if users.enabled and users.starting_extension_number:
            allocator = self.pool.allocator(users.starting_extension_number, users.last_extension_number)
            for new in sorted(self._new, key=lambda item: item.sort_key):
                user_id = new.sort_key[1]
                try:
                    number = self.pool.own_number("user", user_id) or allocator.take()
                except RangeExhausted as err:
                    self.plan.failures.append(("user", f"{new.upn}: {err}"))
                    continue
                operation = PbxOperation("create", "User", user_id, maybe_applied=user_id in self.inputs.pending_creates)
                pushed = Pushed("user", user_id, None, None, None, None, True, None, self._photo_etag(user_id, None), number)
                self.plan.changes.append(Change("user", "create", Phase.WRITE, operation, pushed, new.upn, new.rule,
                                                new.fingerprint, extension=number))
                if self.track_active:
                    self.active[user_id] = (new.upn, None)
        self._new = []
        self._report_unmatched()
        return self.plan

    def complete_creates(self, chunk: list[Change], copies: Mapping[str, GraphCopy]) -> list[Change]:
        """The chunk with each deferred create's payload built from its stored copy.

        A copy gone since planning (purged by a concurrent disconnect) drops its
        create; the next run plans it again if it is still wanted."""
        out = []
        for change in chunk:
            if not is_deferred_create(change):
                out.append(change)
                continue
            copy = copies.get(change.graph_id)
            if copy is None or change.extension is None:
                continue
            payload = self._payload(copy, change.extension, True, None)
            operation = replace(change.operation, payload=payload)
            assert isinstance(change.on_success, Pushed)
            inputs = self._inputs_hash(copy, change.extension, True, self._photo_etag(copy.id, None))
            pushed = replace(change.on_success, payload=payload, payload_hash=payload_hash(payload), input_hash=inputs)
            out.append(replace(change, operation=operation, on_success=pushed))
        return out

    def _report_unmatched(self) -> None:
        tenant = self.tenant
        if not tenant.users.enabled:
            if tenant.sign_in_as_administrator.enabled or tenant.sign_in_as_standard_user.enabled:
                self.plan.notes.append("sign-in settings are on but users.enabled = false: no user gets the flags")
            return
        self.unmatched_selected = [r for r in tenant.users.selected_users if r not in self._matched]
        self.plan.notes += [f"users.selected_users entry {r!r} matches no user" for r in self.unmatched_selected]
        for section, settings in (("sign_in_as_administrator", tenant.sign_in_as_administrator),
                                  ("sign_in_as_standard_user", tenant.sign_in_as_standard_user)):
            if not settings.enabled:
                continue
            for reference in settings.selected_users:
                if (section, reference) not in self._sso_matched:
                    self.plan.notes.append(f"{section}.selected_users entry {reference!r} matches no user")


def plan_users(inputs: PlanInputs, users: Iterable[tuple[GraphCopy | None, SyncedRow | None]]) -> Plan:
    """Plan from an iterable of (Graph copy, pushed state) pairs, creates completed (tests, property checks)."""
    planner = UserPlanner(inputs)
    copies: dict[str, GraphCopy] = {}
    for copy, synced in users:
        planner.add(copy, synced)
        if copy is not None:
            copies[copy.id] = copy
    plan = planner.finish()
    plan.changes = planner.complete_creates(plan.changes, copies)
    return plan
