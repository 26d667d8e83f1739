"""What a run or a calendar poll did, as the CLI, the status page, the run
record and the metrics show it: counts of applied writes per kind, failures,
held deprovisions, and settings that select nobody. Every kind's pipeline
reports here (the applier's ``ReportSink``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.logging import get_logger

if TYPE_CHECKING:
    from daemon.sync.changes import Plan

log = get_logger(__name__)


@dataclass
class KindReport:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, action: str, amount: int = 1) -> None:
        self.counts[action] = self.counts.get(action, 0) + amount


@dataclass
class GroupReport(KindReport):
    missing: list[str] = field(default_factory=list)  # configured ids Graph does not know


@dataclass
class ContactReport(KindReport):
    unreadable: list[str] = field(default_factory=list)
    settings_unreadable: list[str] = field(default_factory=list)  # mailboxSettings 403: shared-mailbox detection blind
    skipped_without_phone: int = 0


@dataclass
class BusyReport(KindReport):
    unreadable: list[str] = field(default_factory=list)  # users whose calendar answered 403

    @property
    def written(self) -> int:
        """Busy lists written to the PBX."""
        return sum(amount for action, amount in self.counts.items() if action != "failed")


@dataclass
class PresenceReport(KindReport):
    polled: int = 0  # users whose presence Graph was asked for
    requests: int = 0  # getPresencesByUserId calls (650 users each)

    @property
    def written(self) -> int:
        """Presence values written to (or removed from) the PBX."""
        return sum(amount for action, amount in self.counts.items() if action != "failed")


@dataclass
class RunReport:
    """The whole run. ``counts`` and ``failures`` are the users' and, for
    failures, every kind's (one list for the operator); ``groups``,
    ``contacts`` and ``busy`` carry their own counts."""

    result: str = "success"  # success | partial | deprovisions_held | failed | reauthorization_required | busy
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    unmatched_selected: list[str] = field(default_factory=list)
    selects_nobody: list[str] = field(default_factory=list)
    full_round: bool = False
    reconciled: int = 0
    error: str | None = None
    groups: GroupReport = field(default_factory=GroupReport)
    contacts: ContactReport = field(default_factory=ContactReport)
    busy: BusyReport = field(default_factory=BusyReport)
    presence: PresenceReport = field(default_factory=PresenceReport)

    def add(self, kind: str, amount: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + amount

    def counts_by_kind(self) -> dict[str, dict[str, int]]:
        """Every kind's applied writes, as each outlet reports them (kinds without any left out):
        a run that creates 6 users and 8 contacts says both, a contact-only change is not ``{}``."""
        kinds = {"user": self.counts, "group": self.groups.counts, "contact": self.contacts.counts,
                 "busy": self.busy.counts, "presence": self.presence.counts}
        return {kind: dict(sorted(counts.items())) for kind, counts in kinds.items() if counts}

    def count(self, kind: str, action: str) -> None:
        """One applied write of ``kind`` (user, group, contact, busy, presence)."""
        if kind == "presence":
            self.presence.add(action)
        elif kind == "group":
            self.groups.add(action)
        elif kind == "contact":
            self.contacts.add(action)
        elif kind == "busy":
            self.busy.add(action)
        else:
            self.add(action)

    def fail(self, kind: str, text: str) -> None:
        """One object that could not be written; the run goes on."""
        if kind == "busy":
            self.failures.append(f"busy list of {text}")
            self.busy.add("failed")
            self.busy.failures.append(text)
            return
        if kind == "presence":
            self.failures.append(f"presence of {text}")
            self.presence.add("failed")
            self.presence.failures.append(text)
            return
        self.failures.append(text if kind == "user" else f"{kind} {text}")
        if kind == "group":
            self.groups.add("failed")
            self.groups.failures.append(text)
        elif kind == "contact":
            self.contacts.add("failed")
            self.contacts.failures.append(text)
        else:
            self.add("failed")

    def withdraw(self, kind: str, marker: str) -> None:
        """A user's or group's failures naming ``marker``, settled later in the same run (a create
        refused for a number taken on the PBX, then written on another): no failure of the run."""
        settled = sum(marker in text for text in self.failures)
        if not settled:
            return
        self.failures = [text for text in self.failures if marker not in text]
        counts = self.groups.counts if kind == "group" else self.counts
        counts["failed"] = counts.get("failed", 0) - settled
        if counts["failed"] <= 0:
            del counts["failed"]
        if kind == "group":
            self.groups.failures = [text for text in self.groups.failures if marker not in text]


UserRunReport = RunReport  # the name the first version used


def summarize(tenant: str, plan: Plan, report: RunReport) -> None:
    """A run's plan summary, logged before its first write (and the dry run's lines)."""
    ordered = plan.ordered()
    report.plan = [c.describe() for c in ordered]
    report.held = [c.describe() for c in plan.held]
    report.selects_nobody = list(plan.notes)
    for note in plan.notes:
        log.warning("a setting selects nobody", tenant=tenant, note=note)
    # debug when it writes and holds nothing: the minute's polls and backstop slices mostly plan nothing
    (log.info if ordered or plan.held else log.debug)("sync plan", tenant=tenant, changes=plan.summary(),
                                                      writes=len(ordered), held=len(plan.held))


def describe_counts(counts: Mapping[str, Any]) -> str:
    """``user create 6; contact create 8`` (or ``no changes``) from :meth:`RunReport.counts_by_kind`;
    a run recorded before every kind was counted has the users' counts only, flat."""
    if counts and not all(isinstance(v, Mapping) for v in counts.values()):
        counts = {"user": counts}
    parts = [f"{kind} " + ", ".join(f"{action} {amount}" for action, amount in sorted(actions.items()))
             for kind, actions in counts.items() if actions]
    return "; ".join(parts) or "no changes"
