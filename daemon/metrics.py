"""Prometheus metrics of one daemon process, on a registry of its own.

A registry per :class:`Metrics` (rather than the global default) keeps tests
independent and lets ``/metrics`` show exactly what this process owns.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import InfoMetricFamily, Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST


class BuildInfo:
    """``m365sync_build_info``, the version read when first scraped: a ``sync --once``
    process never is, and reading the version costs start-up (see ``daemon.__getattr__``)."""

    NAME = "m365sync_build"
    DOCUMENTATION = "Version of m365sync and of the Python running it."

    def describe(self) -> Iterator[Metric]:
        yield InfoMetricFamily(self.NAME, self.DOCUMENTATION)

    def collect(self) -> Iterator[Metric]:
        from daemon import __version__

        yield InfoMetricFamily(self.NAME, self.DOCUMENTATION,
                               value={"version": __version__, "python": platform.python_version()})


class Metrics:
    """Every metric the daemon exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(BuildInfo())
        self.tenant_ready = Gauge(
            "m365sync_tenant_ready",
            "1 when the tenant can sync (authorized, secrets present), else 0.",
            ["tenant"],
            registry=self.registry,
        )

        self.graph_requests = Counter(
            "m365sync_graph_requests",
            "Microsoft Graph requests (batch items included), by endpoint and HTTP status.",
            ["tenant", "endpoint", "status"],
            registry=self.registry,
        )
        self.graph_throttled = Counter(
            "m365sync_graph_throttled",
            "Graph answers of 429 Too Many Requests (batch items included).",
            ["tenant"],
            registry=self.registry,
        )
        self.graph_request_duration = Histogram(
            "m365sync_graph_request_duration_seconds",
            "Time from sending a Graph request to reading its answer.",
            ["tenant", "endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

        self.pbx_requests = Counter(
            "m365sync_pbx_requests",
            "SCIM requests to the PBX, by operation and HTTP status.",
            ["tenant", "op", "status"],
            registry=self.registry,
        )
        self.pbx_request_duration = Histogram(
            "m365sync_pbx_request_duration_seconds",
            "Time from sending a SCIM request to the PBX to reading its answer.",
            ["tenant", "op"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )

        self.auth_state = Gauge(
            "m365sync_auth_state",
            "1 for the tenant's current authorization state, 0 for the others.",
            ["tenant", "state"],
            registry=self.registry,
        )

        self.sync_runs = Counter(
            "m365sync_sync_runs", "Finished sync runs, by result.", ["tenant", "result"], registry=self.registry
        )
        self.sync_duration = Histogram(
            "m365sync_sync_duration_seconds",
            "Duration of sync runs.",
            ["tenant"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.last_success = Gauge(
            "m365sync_last_success_timestamp_seconds",
            "Unix time of the last run that ended in success.",
            ["tenant"],
            registry=self.registry,
        )
        self.objects_changed = Counter(
            "m365sync_objects_changed",
            "Objects written to the PBX, by kind and action.",
            ["tenant", "kind", "action"],
            registry=self.registry,
        )
        self.objects_failed = Counter(
            "m365sync_objects_failed", "Objects the PBX refused.", ["tenant", "kind"], registry=self.registry
        )
        self.synced_objects = Gauge(
            "m365sync_synced_objects", "Objects on the PBX that the daemon manages.", ["tenant", "kind"],
            registry=self.registry,
        )
        self.next_run = Gauge(
            "m365sync_next_run_timestamp_seconds", "Unix time of the next scheduled run.", ["tenant"],
            registry=self.registry,
        )
        self.schedule_interval = Gauge(
            "m365sync_schedule_interval_seconds",
            "Seconds between the tenant's next two scheduled runs (for 'no success for two intervals' alerts).",
            ["tenant"], registry=self.registry,
        )
        self.deprovisions_held = Gauge(
            "m365sync_deprovisions_held",
            "Disables and deletes held by the mass-deletion guard, waiting for m365sync approve.",
            ["tenant"],
            registry=self.registry,
        )

        self.calendar_polls = Counter(
            "m365sync_calendar_polls", "Calendar polls, by result.", ["tenant", "result"], registry=self.registry
        )
        self.calendar_polls_skipped = Counter(
            "m365sync_calendar_polls_skipped",
            "Calendar polls skipped because the previous poll overran its interval.",
            ["tenant"],
            registry=self.registry,
        )
        self.calendar_unreadable = Gauge(
            "m365sync_calendar_unreadable_users",
            "Users whose calendar answered 403 and is not polled.",
            ["tenant"],
            registry=self.registry,
        )

        self.presence_polls = Counter(
            "m365sync_presence_polls", "Teams presence polls, by result.", ["tenant", "result"], registry=self.registry
        )
        self.presence_polls_skipped = Counter(
            "m365sync_presence_polls_skipped",
            "Presence polls skipped because the previous poll overran its interval.",
            ["tenant"],
            registry=self.registry,
        )
        self.presence_writes = Counter(
            "m365sync_presence_writes",
            "Presence values written to the PBX (only changed ones are), by action (update, failed).",
            ["tenant", "action"],
            registry=self.registry,
        )
        self.presence_poll_duration = Histogram(
            "m365sync_presence_poll_seconds",
            "One presence poll, from its first Graph request to its last PBX write: a change waits at most "
            "presence.poll_seconds plus this.",
            ["tenant"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.directory_polls_skipped = Counter(
            "m365sync_directory_polls_skipped",
            "Users polls and mailbox backstop polls skipped because the previous one overran its interval.",
            ["tenant", "poll"],
            registry=self.registry,
        )

        self.run_lateness = Histogram(
            "m365sync_run_start_lateness_seconds",
            "How late scheduled runs start after their crontab fired (waiting for a place included).",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.tenant_owner = Gauge(
            "m365sync_tenant_owner",
            "1 for each tenant this daemon holds the lease of (shared PostgreSQL state).",
            ["tenant", "instance"],
            registry=self.registry,
        )
        self.leases_lost = Counter(
            "m365sync_leases_lost",
            "Tenant leases this daemon lost (its PostgreSQL session ended): their runs stopped writing.",
            registry=self.registry,
        )
        self.subscriptions = Gauge(
            "m365sync_subscriptions",
            "Graph change-notification subscriptions, by state (active, reauthorize, removed).",
            ["tenant", "state"],
            registry=self.registry,
        )
        self.notifications_received = Counter(
            "m365sync_notifications_received",
            "Change and lifecycle notifications accepted, by kind (user, group, contact, busy, lifecycle).",
            ["tenant", "kind"],
            registry=self.registry,
        )
        self.notifications_rejected = Counter(
            "m365sync_notifications_rejected",
            "Notification requests or items refused (unknown subscription, client_state, malformed, rate).",
            ["tenant", "reason"],
            registry=self.registry,
        )
        self.notifications_reachable = Gauge(
            "m365sync_notifications_reachable",
            "1 when Graph validated the notification address, 0 when its handshake failed (polling goes on).",
            ["tenant"],
            registry=self.registry,
        )
        self.freshness = Histogram(
            "m365sync_freshness_seconds",
            "From a change's notification (or its detection by a poll) to its PBX write, by kind.",
            ["tenant", "kind", "trigger"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 21600),
            registry=self.registry,
        )
        self.owns: Callable[[str], bool] = lambda tenant: True  # a shared state: the tenants this daemon owns

    def render(self) -> bytes:
        """The text exposition format served at ``/metrics``: per-tenant series only
        of the tenants this daemon owns (every tenant, on SQLite)."""
        return generate_latest(_OwnedTenants(self))


class _OwnedTenants:
    """The registry, without the series of tenants another daemon owns (they export those)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for family in self.metrics.registry.collect():
            family.samples = [s for s in family.samples
                              if "tenant" not in s.labels or self.metrics.owns(s.labels["tenant"])]
            yield family
