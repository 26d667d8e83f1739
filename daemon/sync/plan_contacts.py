"""The contacts planner: stored Outlook contacts -> PBX directory entries. Pure.

A contact is wanted while its mailbox is read (an active user's, for
``personal``; a shared mailbox's, for ``company``), it is not removed, and,
for personal contacts with ``require_phone``, it has a phone number. The
owner of a personal contact is its user's PBX id (or, for a user created in
this run, filled in by the applier). Contacts are fed one at a time, so the
caller streams them from the state database.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from daemon.config import TenantConfig
from daemon.pbx.mapping import contact_payload, has_phone_number, patch_operations, payload_hash
from daemon.pbx.types import PbxOperation
from daemon.sync.backoff import fingerprint, held_back
from daemon.sync.changes import NO_REFS, Change, Phase, Plan, Refs, UserRef
from state.pushed import Pushed, Removed
from state.sync_store import GraphCopy, SyncedRow


@dataclass(frozen=True)
class Mailbox:
    user_id: str
    upn: str
    directory: str  # personal | company
    owner_pbx_id: str | None  # None: the user is created in this run

    @property
    def owner(self) -> str | None:
        """The ``owner`` attribute: the user's PBX id (personal contacts only; None while unknown)."""
        return self.owner_pbx_id if self.directory == "personal" else None

    @property
    def refs(self) -> Refs:
        """A personal contact of a user created in this run names its owner once the applier knows its id."""
        if self.directory == "personal" and self.owner_pbx_id is None:
            return Refs(owner=UserRef(self.user_id))
        return NO_REFS


def synced_mailboxes(tenant: TenantConfig, active: Mapping[str, tuple[str, str | None]],
                     shared: Mapping[str, str]) -> dict[str, Mailbox]:
    """Whose contacts go to the PBX: ``active`` users (id -> (UPN, PBX id)) that are not shared
    mailboxes, for personal contacts, and the shared mailboxes (id -> UPN), for company ones."""
    mailboxes: dict[str, Mailbox] = {}
    if tenant.personal_contacts.enabled:
        for user_id, (upn, pbx_id) in sorted(active.items()):
            if user_id not in shared:
                mailboxes[user_id] = Mailbox(user_id, upn, "personal", pbx_id)
    if tenant.shared_mailbox.enabled:
        for user_id, upn in sorted(shared.items()):
            mailboxes[user_id] = Mailbox(user_id, upn, "company", None)
    return mailboxes


class ContactPlanner:
    def __init__(self, tenant: TenantConfig, mailboxes: Mapping[str, Mailbox], pending_creates: Set[str],
                 on_pbx: Mapping[str, str], now: float | None = None) -> None:
        self.tenant = tenant
        self.now = now  # None: failed contacts are tried every run (no backoff)
        self.mailboxes = mailboxes
        self.pending_creates = pending_creates
        self.on_pbx = on_pbx  # externalId -> PBX id, when the PBX's contacts were listed this run
        self.plan = Plan()
        self.skipped_without_phone = 0

    def add(self, copy: GraphCopy | None, synced: SyncedRow | None) -> None:
        """Plan one contact; whatever goes wrong with it fails this contact alone."""
        try:
            self._add(copy, synced)
        except Exception as error:  # one object's failure, never the run's
            graph_id = copy.id if copy is not None else (synced.graph_id if synced is not None else None)
            if graph_id is None:
                raise
            label = str(copy.data.get("displayName") or graph_id) if copy is not None else graph_id
            mailbox = self.mailboxes.get(str(copy.data.get("_owner"))) if copy is not None else None
            inputs = _inputs(copy, mailbox) if copy is not None and mailbox is not None else ""
            self.plan.fail("contact", graph_id, label, error, inputs)

    def _add(self, copy: GraphCopy | None, synced: SyncedRow | None) -> None:
        graph_id = copy.id if copy is not None else (synced.graph_id if synced is not None else None)
        if graph_id is None:
            return
        recorded = synced.pbx_id if synced is not None else None
        pbx_id = recorded or self.on_pbx.get(graph_id)
        mailbox = self.mailboxes.get(str(copy.data.get("_owner"))) if copy is not None else None
        label = str(copy.data.get("displayName") or graph_id) if copy is not None else graph_id
        wanted = copy is not None and copy.removed is None and mailbox is not None
        if wanted and mailbox is not None and copy is not None and mailbox.directory == "personal" \
                and self.tenant.personal_contacts.require_phone and not has_phone_number(copy.data):
            wanted = False
            self.skipped_without_phone += 1
        purge = copy is None or copy.removed is not None
        if not wanted:
            if pbx_id is not None:
                operation = PbxOperation("delete", "Contact", graph_id, pbx_id=pbx_id)
                self.plan.changes.append(Change("contact", "delete", Phase.DISABLE, operation,
                                                Removed("contact", graph_id, purge), label, _why_not(copy, mailbox)))
            elif copy is None and synced is not None and synced.failures:
                pass  # refused at its read, never stored: its failure stays recorded until it is read again
            elif synced is not None or purge:
                self.plan.bookkeeping.append(Removed("contact", graph_id, purge))
            return
        assert copy is not None and mailbox is not None
        if self.now is not None and synced is not None and synced.failures:
            held = held_back(synced, _inputs(copy, mailbox), self.now)
            if held is not None:
                (self.plan.waiting if held == "waiting" else self.plan.quarantined).append(("contact", label))
                return
        desired = contact_payload(copy.data, directory=mailbox.directory, source=mailbox.upn, owner=mailbox.owner)
        pushed = Pushed("contact", graph_id, pbx_id, desired, payload_hash(desired), synced.etag if synced else None)
        if pbx_id is None:
            operation = PbxOperation("create", "Contact", graph_id, payload=desired,
                                     maybe_applied=graph_id in self.pending_creates)
            self.plan.changes.append(Change("contact", "create", Phase.MEMBERSHIP, operation, pushed, label,
                                            f"in the {mailbox.directory} contacts of {mailbox.upn}",
                                            fingerprint=_inputs(copy, mailbox), refs=mailbox.refs))
        elif recorded is None:  # on the PBX but not recorded (the state was lost): re-read and converge
            operation = PbxOperation("update", "Contact", graph_id, payload=desired, pbx_id=pbx_id, maybe_applied=True)
            self.plan.changes.append(Change("contact", "update", Phase.MEMBERSHIP, operation, pushed, label,
                                            "on the PBX but not recorded (recovering)", fingerprint=_inputs(copy, mailbox), refs=mailbox.refs))
        elif synced is not None and synced.payload_hash != payload_hash(desired):
            operation = PbxOperation("update", "Contact", graph_id, payload=desired,
                                     operations=patch_operations(synced.payload or {}, desired), pbx_id=pbx_id,
                                     etag=synced.etag)
            self.plan.changes.append(Change("contact", "update", Phase.MEMBERSHIP, operation, pushed, label,
                                            "changed in Outlook", fingerprint=_inputs(copy, mailbox), refs=mailbox.refs))

    def finish(self) -> Plan:
        return self.plan


def _inputs(copy: GraphCopy, mailbox: Mailbox) -> str:
    """What a contact's write is made from, named (a failed contact is retried early when it changes)."""
    return fingerprint(copy.data, mailbox.directory, mailbox.upn, mailbox.owner)


def _why_not(copy: GraphCopy | None, mailbox: Mailbox | None) -> str:
    if copy is None or copy.removed is not None:
        return "deleted in Outlook"
    if mailbox is None:
        return "its mailbox is no longer synced"
    return "has no phone number (personal_contacts.require_phone)"
