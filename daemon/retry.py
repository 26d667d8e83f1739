"""Retry timing shared by the Graph and PBX clients.

Servers that say ``Retry-After`` are waited on at least that long; everything
else retryable backs off exponentially with full jitter, within a bounded
number of attempts.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from daemon.clock import SystemClock
from daemon.metrics import Metrics


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    longest_retry_after: float = 600.0  # a longer Retry-After ends the request instead

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff for ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)

    def delay(self, retry_after: float | None, attempt: int, rng: random.Random) -> float | None:
        """Seconds to wait before the next attempt; None to give up now."""
        if retry_after is not None:
            if retry_after > self.longest_retry_after:
                return None
            return retry_after  # never less than the server asked
        return self.backoff(attempt, rng)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the delta-seconds form), if present and valid."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass
class GraphBudget:
    """One tenant's Graph concurrency, shared by every executor of that tenant
    (sync runs and calendar polls): batches in flight and items per mailbox."""

    max_batches_in_flight: int = 4
    per_mailbox: int = 4
    in_flight: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Transport:
    """How one tenant reaches a peer (Graph or the PBX): the process-wide
    session, the trust for its TLS, the metrics, the clock and retry policy."""

    session: aiohttp.ClientSession
    tenant: str
    metrics: Metrics
    ssl_context: ssl.SSLContext | None = None
    clock: Clock = field(default_factory=SystemClock)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rng: random.Random = field(default_factory=random.Random)
    budget: GraphBudget | None = None  # shared by a tenant's concurrent Graph work

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl=``: the configured context, or default verification."""
        return self.ssl_context if self.ssl_context is not None else True
