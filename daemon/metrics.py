"""Every metric of the daemon, declared once (:class:`Metrics`).

The daemon serves them at ``/metrics`` (``daemon.metrics_export``, prometheus_client);
nobody scrapes a CLI command's, so ``Metrics(served=False)`` records nothing and a
``sync --once`` does not import prometheus_client at all (bench/results/startup.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from daemon.metrics_export import Exporter


class Counting(Protocol):
    def labels(self, *values: object, **named: object) -> Counting: ...

    def inc(self, amount: float = 1) -> None: ...


class Gauging(Protocol):
    def labels(self, *values: object, **named: object) -> Gauging: ...

    def set(self, value: float) -> None: ...

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def remove(self, *values: object) -> None: ...


class Observing(Protocol):
    def labels(self, *values: object, **named: object) -> Observing: ...

    def observe(self, amount: float) -> None: ...


class Unrecorded:
    """A metric of metrics nobody serves: every series, and nothing recorded."""

    def labels(self, *values: object, **named: object) -> Unrecorded:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def remove(self, *values: object) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


UNRECORDED = Unrecorded()


class Metrics:
    """Every metric the daemon exports; ``served=False``: a CLI command's, which record nothing."""

    def __init__(self, served: bool = True) -> None:
        self._exporter: Exporter | None = None
        if served:
            from daemon.metrics_export import Exporter  # prometheus_client: only where metrics are served

            self._exporter = Exporter()
        self.tenant_ready = self._gauge(
            "m365sync_tenant_ready",
            "1 when the tenant can sync (authorized, secrets present), else 0.",
            ["tenant"])

        self.graph_requests = self._counter(
            "m365sync_graph_requests",
            "Microsoft Graph requests (batch items included), by endpoint and HTTP status.",
            ["tenant", "endpoint", "status"])
        self.graph_throttled = self._counter(
            "m365sync_graph_throttled",
            "Graph answers of 429 Too Many Requests (batch items included).",
            ["tenant"])
        self.graph_request_duration = self._histogram(
            "m365sync_graph_request_duration_seconds",
            "Time from sending a Graph request to reading its answer.",
            ["tenant", "endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

        self.pbx_requests = self._counter(
            "m365sync_pbx_requests",
            "SCIM requests to the PBX, by operation and HTTP status.",
            ["tenant", "op", "status"])
        self.pbx_request_duration = self._histogram(
            "m365sync_pbx_request_duration_seconds",
            "Time from sending a SCIM request to the PBX to reading its answer.",
            ["tenant", "op"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

        self.auth_state = self._gauge(
            "m365sync_auth_state",
            "1 for the tenant's current authorization state, 0 for the others.",
            ["tenant", "state"])

        self.sync_runs = self._counter(
            "m365sync_sync_runs", "Finished sync runs, by result.", ["tenant", "result"])
        self.sync_duration = self._histogram(
            "m365sync_sync_duration_seconds",
            "Duration of sync runs.",
            ["tenant"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
        self.last_success = self._gauge(
            "m365sync_last_success_timestamp_seconds",
            "Unix time of the last run that ended in success.",
            ["tenant"])
        self.objects_changed = self._counter(
            "m365sync_objects_changed",
            "Objects written to the PBX, by kind and action.",
            ["tenant", "kind", "action"])
        self.objects_failed = self._counter(
            "m365sync_objects_failed", "Objects the PBX refused.", ["tenant", "kind"])
        self.synced_objects = self._gauge(
            "m365sync_synced_objects", "Objects on the PBX that the daemon manages.", ["tenant", "kind"])
        self.next_run = self._gauge(
            "m365sync_next_run_timestamp_seconds", "Unix time of the next scheduled run.", ["tenant"])
        self.schedule_interval = self._gauge(
            "m365sync_schedule_interval_seconds",
            "Seconds between the tenant's next two scheduled runs (for 'no success for two intervals' alerts).",
            ["tenant"])
        self.deprovisions_held = self._gauge(
            "m365sync_deprovisions_held",
            "Disables and deletes held by the mass-deletion guard, waiting for m365sync approve.",
            ["tenant"])

        self.calendar_polls = self._counter(
            "m365sync_calendar_polls", "Calendar polls, by result.", ["tenant", "result"])
        self.calendar_polls_skipped = self._counter(
            "m365sync_calendar_polls_skipped",
            "Calendar polls skipped because the previous poll overran its interval.",
            ["tenant"])
        self.calendar_unreadable = self._gauge(
            "m365sync_calendar_unreadable_users",
            "Users whose calendar answered 403 and is not polled.",
            ["tenant"])

        self.presence_polls = self._counter(
            "m365sync_presence_polls", "Teams presence polls, by result.", ["tenant", "result"])
        self.presence_polls_skipped = self._counter(
            "m365sync_presence_polls_skipped",
            "Presence polls skipped because the previous poll overran its interval.",
            ["tenant"])
        self.presence_writes = self._counter(
            "m365sync_presence_writes",
            "Presence values written to the PBX (only changed ones are), by action (update, failed).",
            ["tenant", "action"])
        self.presence_poll_duration = self._histogram(
            "m365sync_presence_poll_seconds",
            "One presence poll, from its first Graph request to its last PBX write: a change waits at most "
            "presence.poll_seconds plus this.",
            ["tenant"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.directory_polls_skipped = self._counter(
            "m365sync_directory_polls_skipped",
            "Users polls and mailbox backstop polls skipped because the previous one overran its interval.",
            ["tenant", "poll"])

        self.run_lateness = self._histogram(
            "m365sync_run_start_lateness_seconds",
            "How late scheduled runs start after their crontab fired (waiting for a place included).",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
        self.tenant_owner = self._gauge(
            "m365sync_tenant_owner",
            "1 for each tenant this daemon holds the lease of (shared PostgreSQL state).",
            ["tenant", "instance"])
        self.leases_lost = self._counter(
            "m365sync_leases_lost",
            "Tenant leases this daemon lost (its PostgreSQL session ended): their runs stopped writing.")
        self.subscriptions = self._gauge(
            "m365sync_subscriptions",
            "Graph change-notification subscriptions, by state (active, reauthorize, removed).",
            ["tenant", "state"])
        self.notifications_received = self._counter(
            "m365sync_notifications_received",
            "Change and lifecycle notifications accepted, by kind (user, group, contact, busy, lifecycle).",
            ["tenant", "kind"])
        self.notifications_rejected = self._counter(
            "m365sync_notifications_rejected",
            "Notification requests or items refused (unknown subscription, client_state, malformed, rate).",
            ["tenant", "reason"])
        self.notifications_reachable = self._gauge(
            "m365sync_notifications_reachable",
            "1 when Graph validated the notification address, 0 when its handshake failed (polling goes on).",
            ["tenant"])
        self.freshness = self._histogram(
            "m365sync_freshness_seconds",
            "From a change's notification (or its detection by a poll) to its PBX write, by kind.",
            ["tenant", "kind", "trigger"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 21600))
        self.owns: Callable[[str], bool] = lambda tenant: True  # a shared state: the tenants this daemon owns

    @property
    def registry(self) -> CollectorRegistry:
        """The served metrics' prometheus registry (tests and benchmarks read samples from it)."""
        if self._exporter is None:
            raise TypeError("metrics that are not served have no registry")
        return self._exporter.registry

    def render(self) -> bytes:
        """The text exposition format served at ``/metrics``: per-tenant series only
        of the tenants this daemon owns (every tenant, on SQLite)."""
        return b"" if self._exporter is None else self._exporter.render(self.owns)

    def _counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counting:
        return UNRECORDED if self._exporter is None else self._exporter.counter(name, documentation, labels)

    def _gauge(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Gauging:
        return UNRECORDED if self._exporter is None else self._exporter.gauge(name, documentation, labels)

    def _histogram(self, name: str, documentation: str, labels: Iterable[str] = (), *,
                   buckets: Iterable[float]) -> Observing:
        if self._exporter is None:
            return UNRECORDED
        return self._exporter.histogram(name, documentation, labels, buckets)
