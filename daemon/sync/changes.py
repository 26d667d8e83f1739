"""What every planner produces and the one applier consumes: a :class:`Change`
(one PBX write and the bookkeeping its success or failure needs) and the
whole run's :class:`Plan`.

Changes are applied in phases, whatever their kind: creates and updates,
then group memberships, then disables (and contact deletes), then group
deletes, then user deletes. A PBX group can so name users created earlier in
the same run (their PBX ids are filled in by the applier: see
:data:`PENDING_MEMBER`), and nothing is removed before what replaces it exists.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, Protocol

from daemon.errors import M365SyncError, reason_of
from daemon.graph.records import MAX_TEXT, clean_text
from daemon.pbx.mapping import Payload
from daemon.pbx.types import PbxOperation
from state.copies import GraphCopy
from state.pushed import Bookkeeping, Failed

ObjectKind = Literal["user", "group", "contact", "busy", "presence"]
# One attribute of a user, rewritten by its own poll: a failure is retried by the next
# poll (never quarantined), and no write of them goes into the objects' history.
POLLED_ATTRIBUTES = frozenset({"busy", "presence"})


@dataclass(frozen=True, slots=True)
class UserRef:
    """A user created in this run: its PBX id is known once its create was answered."""

    graph_id: str


@dataclass(frozen=True, slots=True)
class PhotoRef:
    """The photo a user write sends: its bytes are fetched for its chunk only."""

    user_id: str
    etag: str


class PayloadSource(Protocol):
    """Builds a create's payload from its stored Graph copy when its chunk is applied,
    so a first run of 100k users holds ids, not 100k payloads (see ``plan_users``)."""

    def build_create(self, copy: GraphCopy, number: str) -> tuple[Payload, str | None]:
        """(the payload, the input hash it was made from)."""
        ...

    def fingerprint(self, copy: GraphCopy) -> str:
        """What a failed create's quarantine is bound to, made per chunk as its payload is."""
        ...


@dataclass(frozen=True, slots=True)
class Refs:
    """What a change's operation still needs before it is sent (nothing, for most)."""

    payload_source: PayloadSource | None = None  # a create whose payload is built per chunk
    members: tuple[UserRef, ...] = ()  # group members created in this run
    owner: UserRef | None = None  # a personal contact's owner, created in this run
    photo: PhotoRef | None = None  # the photo the write sends

    @property
    def pending_users(self) -> bool:
        return bool(self.members) or self.owner is not None

    def built(self) -> Refs:
        """These references once the payload was built: nothing left to build it from."""
        return Refs(None, self.members, self.owner, self.photo)


NO_REFS = Refs()


class Phase(IntEnum):
    WRITE = 0  # creates and updates
    MEMBERSHIP = 1  # PBX groups: created or changed once their members exist
    DISABLE = 2  # disables, and contact deletes
    GROUP_DELETE = 3
    USER_DELETE = 4


@dataclass(frozen=True, slots=True)
class Change:
    """One planned write. ``on_success`` is the bookkeeping once the PBX said
    yes (the applier fills in the PBX id and ETag it answered); a failure is
    recorded against ``graph_id`` with ``fingerprint`` (for quarantine)."""

    kind: ObjectKind
    action: str  # create | update | enable | disable | delete (what the report counts)
    phase: Phase
    operation: PbxOperation
    on_success: Bookkeeping
    label: str  # who, for people: a UPN, a group or contact name
    reason: str = ""
    fingerprint: str = ""
    extension: str | None = None  # a number this create allocates (recorded before it is sent)
    refs: Refs = NO_REFS  # resolved by the applier per chunk

    @property
    def graph_id(self) -> str:
        return self.operation.external_id

    @property
    def is_deprovision(self) -> bool:
        return self.action in ("disable", "delete")

    def materialized(self, operation: PbxOperation, on_success: Bookkeeping, fingerprint: str, refs: Refs) -> Change:
        """This change as the applier sends it (every other field copied: one per new user of a run,
        faster than ``replace``)."""
        return Change(self.kind, self.action, self.phase, operation, on_success, self.label, self.reason, fingerprint,
                      self.extension, refs)

    def describe(self) -> str:
        """``update user alice@contoso.example ext 1001 [title] (reason)``: the plan and dry-run line."""
        changed = ", ".join(str(op.get("path")) for op in self.operation.operations) if self.action != "create" else ""
        number = f" ext {self.extension}" if self.extension else ""
        return (f"{self.action} {self.kind} {self.label}{number}" + (f" [{changed}]" if changed else "")
                + (f" ({self.reason})" if self.reason else ""))


def failure_text(error: BaseException | str) -> str:
    """An error as an object's recorded reason: safe to store and show, whatever text it quotes."""
    text = error if isinstance(error, str) else reason_of(error) if isinstance(error, M365SyncError) \
        else f"{type(error).__name__}: {error}"
    return clean_text(text)[:MAX_TEXT]


@dataclass
class Plan:
    """A whole run's changes, the deprovisions the guard held, and notes."""

    changes: list[Change] = field(default_factory=list)
    held: list[Change] = field(default_factory=list)
    bookkeeping: list[Bookkeeping] = field(default_factory=list)  # no write needed (tracking)
    failures: list[tuple[ObjectKind, str]] = field(default_factory=list)  # (kind, "who: why") found while planning
    quarantined: list[tuple[ObjectKind, str]] = field(default_factory=list)  # (kind, who): skipped until they change
    waiting: list[tuple[ObjectKind, str]] = field(default_factory=list)  # (kind, who): failed, retried later
    notes: list[str] = field(default_factory=list)  # settings that select nobody, and the like

    def fail(self, kind: ObjectKind, graph_id: str, label: str, error: BaseException | str,
             fingerprint: str = "") -> None:
        """One object could not be planned: it alone fails, recorded with its reason (busy lists and
        presence are retried by the next poll, so they are only reported)."""
        text = failure_text(error)
        self.failures.append((kind, f"{clean_text(label)}: {text}"))
        if kind not in POLLED_ATTRIBUTES:
            self.bookkeeping.append(Failed(kind, graph_id, text, fingerprint))

    def extend(self, other: Plan) -> None:
        self.changes += other.changes
        self.held += other.held
        self.bookkeeping += other.bookkeeping
        self.failures += other.failures
        self.quarantined += other.quarantined
        self.waiting += other.waiting
        self.notes += other.notes

    def ordered(self) -> list[Change]:
        """Every change in apply order (stable within a phase)."""
        return sorted(self.changes, key=lambda c: c.phase)

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per kind and action, for the log line before the first write."""
        counts: dict[str, Counter[str]] = {}
        for change in self.changes:
            counts.setdefault(change.kind, Counter())[change.action] += 1
        for change in self.held:
            counts.setdefault(change.kind, Counter())["held"] += 1
        return {kind: dict(sorted(c.items())) for kind, c in sorted(counts.items())}

