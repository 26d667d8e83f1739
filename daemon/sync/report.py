"""What a run or a calendar poll did, as the CLI, the status page, the run
record and the metrics show it: counts of applied writes per kind, failures,
held deprovisions, and settings that select nobody. Every kind's pipeline
reports here (the applier's ``ReportSink``)."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def add(self, kind: str, amount: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + amount

    def count(self, kind: str, action: str) -> None:
        """One applied write of ``kind`` (user, group, contact, busy)."""
        if kind == "group":
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
        self.failures.append(text if kind == "user" else f"{kind} {text}")
        if kind == "group":
            self.groups.add("failed")
            self.groups.failures.append(text)
        elif kind == "contact":
            self.contacts.add("failed")
            self.contacts.failures.append(text)
        else:
            self.add("failed")


UserRunReport = RunReport  # the name the first version used
