"""Serving the daemon's :class:`~daemon.metrics.Metrics` to Prometheus, on a registry of its own.

A registry per :class:`Metrics` (rather than the global default) keeps tests
independent and lets ``/metrics`` show exactly what this process owns.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

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
    """``m365sync_build_info``, the version read when first scraped: reading it costs
    start-up (see ``daemon.__getattr__``), and many daemons are never scraped."""

    NAME = "m365sync_build"
    DOCUMENTATION = "Version of m365sync and of the Python running it."

    def describe(self) -> Iterator[Metric]:
        yield InfoMetricFamily(self.NAME, self.DOCUMENTATION)

    def collect(self) -> Iterator[Metric]:
        from daemon import __version__

        yield InfoMetricFamily(self.NAME, self.DOCUMENTATION,
                               value={"version": __version__, "python": platform.python_version()})


class Exporter:
    """The prometheus_client side of one :class:`Metrics`: its registry, its metrics, its page."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(BuildInfo())

    def counter(self, name: str, documentation: str, labels: Iterable[str]) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Iterable[str]) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def histogram(self, name: str, documentation: str, labels: Iterable[str], buckets: Iterable[float]) -> Histogram:
        return Histogram(name, documentation, labels, buckets=tuple(buckets), registry=self.registry)

    def render(self, owns: Callable[[str], bool]) -> bytes:
        """Per-tenant series only of the tenants ``owns`` (every tenant, on SQLite)."""
        return generate_latest(_OwnedTenants(self.registry, owns))


class _OwnedTenants:
    """The registry, without the series of tenants another daemon owns (they export those)."""

    def __init__(self, registry: CollectorRegistry, owns: Callable[[str], bool]) -> None:
        self.registry = registry
        self.owns = owns

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if "tenant" not in s.labels or self.owns(s.labels["tenant"])]
            yield family
