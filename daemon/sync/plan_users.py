"""The user planner: (stored Graph copies, pushed state, settings, snapshot)
-> the smallest set of SCIM writes, as :class:`~daemon.sync.changes.Change`s.
Pure: no I/O, unit-testable, and the same plan feeds a real run and a dry run.

Users are fed one at a time (``add``) so the caller can stream them from the
state database; new users are numbered at ``finish`` in userPrincipalName
order, so first numbering is deterministic. The planner also says which users
will be active on the PBX after the run (their mailboxes feed the contacts).

A create is planned without its payload: the planner keeps only the new
user's id, name and number, and its change names the planner as its
:class:`~daemon.sync.changes.PayloadSource`; the applier has
:meth:`UserPlanner.build_create` build each applied chunk's payloads from the
stored copies. A first run of 100k
users so holds ids, not 100k Graph copies and SCIM payloads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config import TenantConfig
from daemon.errors import RangeExhausted
from daemon.pbx.mapping import Payload, patch_operations, payload_hash, user_payload
from daemon.pbx.schema import PBX_USER
from daemon.pbx.types import PbxOperation
from daemon.sync.backoff import held_back
from daemon.sync.changes import Change, Phase, PhotoRef, Plan, Refs
from daemon.sync.materialize import build_deferred
from daemon.sync.numbering import Allocation, NumberPool
from daemon.sync.scope import ScopeDecision, decide, matches, sso_flags
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
# How a stored payload records the photo it was sent with (its mediaEtag), so a new photo is a
# payload change; never sent as such: the write carries a PhotoRef and the applier puts the bytes in.
PHOTO_VERSION = "graph-photo:"
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


@dataclass(frozen=True, slots=True)
class OnPbx:
    """A user the PBX has: who, where, its number, and since when it is out of scope (None: in scope)."""

    upn: str
    pbx_id: str
    number: str
    since: float | None


def _action(recovered: bool, was_active: bool | None, decision: ScopeDecision) -> tuple[str, str]:
    """The report's action and reason for a write to a user the PBX has."""
    if recovered:
        return "update", "on the PBX but not recorded (recovering after an interruption)"
    if was_active and not decision.active:
        return "disable", decision.rule
    if was_active is False and decision.active:
        return "enable", decision.rule
    return "update", "changed in Entra ID or in the settings"


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
        """Plan one user; whatever goes wrong with it fails this user alone."""
        try:
            self._add(copy, synced)
        except Exception as error:  # one object's failure, never the run's
            if copy is None:
                raise
            self.plan.fail("user", copy.id, str(copy.data.get("userPrincipalName") or copy.id), error,
                           self._fingerprint(copy))

    def _add(self, copy: GraphCopy | None, synced: SyncedRow | None) -> None:
        if not self.tenant.users.enabled:
            return  # users.enabled = false: nothing is created, changed or removed
        if copy is None:
            return  # pushed but no Graph copy: nothing known to act on
        upn = str(copy.data.get("userPrincipalName") or copy.id)
        self._note_matches(copy.data)
        if synced is not None and synced.quarantine_fingerprint and synced.quarantine_fingerprint == self._fingerprint(copy):
            self.plan.quarantined.append(("user", upn))
            if synced.active and synced.pbx_id and self.track_active:
                self.active[copy.id] = (upn, synced.pbx_id)  # still on the PBX as it was
            return
        if synced is not None and synced.failures and \
                held_back(synced, self._fingerprint(copy), self.inputs.now) == "waiting":
            self.plan.waiting.append(("user", upn))
            if synced.active and synced.pbx_id and self.track_active:
                self.active[copy.id] = (upn, synced.pbx_id)
            return
        decision = decide(copy.data, copy.removed, self.tenant, self.inputs.group_members, self.inputs.shared_mailboxes)
        entry = self.inputs.pbx_by_external_id.get(copy.id)
        pbx_id = synced.pbx_id if synced is not None and synced.pbx_id else (entry.pbx_id if entry else None)
        if pbx_id is None:
            if decision.active:
                # its fingerprint is made with its payload, per chunk (``fingerprint``), not here before any write
                self._new.append(NewUser((upn.lower(), copy.id), upn, decision.rule))
            return
        if copy.removed == "deleted":
            self._delete(copy.id, upn, decision.rule, pbx_id, self._fingerprint(copy), purge_copy=True)
            return
        since = self._out_of_scope_since(decision, synced)
        days = self.tenant.users.delete_after_days
        if since is not None and days and self.inputs.now - since >= days * DAY:
            self._delete(copy.id, upn, f"{decision.rule}; out of scope for more than {days} days", pbx_id,
                         self._fingerprint(copy), purge_copy=False)
            return
        if decision.active and self.track_active:
            self.active[copy.id] = (upn, pbx_id)
        self._update(copy, synced, OnPbx(upn, pbx_id, self._number_of(copy.id, synced, entry) or "", since), decision)

    def _out_of_scope_since(self, decision: ScopeDecision, synced: SyncedRow | None) -> float | None:
        """When the user left the scope (now, if this run is the first to see it); None while in scope."""
        if decision.in_scope:
            return None
        return synced.out_of_scope_since if synced is not None and synced.out_of_scope_since else self.inputs.now

    def _update(self, copy: GraphCopy, synced: SyncedRow | None, user: OnPbx, decision: ScopeDecision) -> None:
        """The write (if any) that makes a user on the PBX what its inputs say."""
        recovered = synced is None or synced.pbx_id is None
        photo_etag = self._photo_etag(copy.id, synced)
        inputs = self._inputs_hash(copy, user.number, decision.active, photo_etag)
        tracked = synced is not None and synced.out_of_scope_since != user.since
        if not recovered and synced is not None and inputs is not None and synced.input_hash == inputs:
            if tracked:  # made from the same inputs as what was pushed: nothing to build
                self.plan.bookkeeping.append(Tracked("user", copy.id, user.since))
            return
        desired = self._payload(copy, user.number, decision.active, synced)
        desired_hash = payload_hash(desired)
        previous = synced.payload if synced is not None and not recovered else None
        unchanged = previous is not None and synced is not None and synced.payload_hash == desired_hash
        operations = tuple(patch_operations(previous, desired)) if previous is not None and not unchanged else ()
        if not recovered and not operations:
            if tracked:
                self.plan.bookkeeping.append(Tracked("user", copy.id, user.since))
            if inputs is not None and synced is not None and synced.input_hash != inputs:
                self.plan.bookkeeping.append(Remembered("user", copy.id, inputs))
            return
        action, reason = _action(recovered, synced.active if synced is not None else None, decision)
        etag = synced.etag if synced is not None else None
        pushed = Pushed("user", copy.id, user.pbx_id, desired, desired_hash, etag, decision.active, user.since,
                        photo_etag, user.number or None, inputs)
        operation = PbxOperation("update", "User", copy.id, payload=desired, operations=operations,
                                 pbx_id=user.pbx_id, etag=etag, maybe_applied=recovered)
        sends_photo = recovered or any(str(op.get("path")) == "photos" and op.get("op") != "remove"
                                       for op in operations)
        photo = PhotoRef(copy.id, photo_etag) if photo_etag and sends_photo else None
        self.plan.changes.append(Change("user", action, PHASES[action], operation, pushed, user.upn, reason,
                                        self._fingerprint(copy), refs=Refs(photo=photo)))

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

    def matches(self) -> list[str]:
        """The settings entries some planned user matched (``section\0entry``), kept between runs that
        plan only some users, so an entry matched by a user not planned is not reported as matching nobody."""
        return sorted({f"users\0{r}" for r in self._matched} | {f"{s}\0{r}" for s, r in self._sso_matched})

    def seed_matches(self, keys: Iterable[str]) -> None:
        for key in keys:
            section, _, reference = key.partition("\0")
            if section == "users":
                self._matched.add(reference)
            else:
                self._sso_matched.add((section, reference))

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
            photo=f"{PHOTO_VERSION}{etag}" if etag else None,
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
                except RangeExhausted as err:  # recorded: retried when its retry time comes, like any failure
                    # no data fingerprint: the range is full, not the user's data wrong (never quarantined for it)
                    self.plan.fail("user", user_id, new.upn, err)
                    continue
                operation = PbxOperation("create", "User", user_id, maybe_applied=user_id in self.inputs.pending_creates)
                etag = self._photo_etag(user_id, None)
                pushed = Pushed("user", user_id, None, None, None, None, True, None, etag, number)
                refs = Refs(payload_source=self, photo=PhotoRef(user_id, etag) if etag else None)
                self.plan.changes.append(Change("user", "create", Phase.WRITE, operation, pushed, new.upn, new.rule,
                                                extension=number, refs=refs))
                if self.track_active:
                    self.active[user_id] = (new.upn, None)
        self._new = []
        self._report_unmatched()
        return self.plan

    def build_create(self, copy: GraphCopy, number: str) -> tuple[Payload, str | None]:
        """A new user's payload and input hash, from its stored copy (the applier calls it per chunk)."""
        etag = self._photo_etag(copy.id, None)
        return self._payload(copy, number, True, None), self._inputs_hash(copy, number, True, etag)

    def fingerprint(self, copy: GraphCopy) -> str:
        """A new user's quarantine fingerprint, made per chunk with its payload (the applier calls it)."""
        return self._fingerprint(copy)

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
    plan.changes = build_deferred(plan.changes, copies)
    return plan
