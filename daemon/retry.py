"""The one retry policy of the Graph and PBX clients, run by tenacity.

Servers that say ``Retry-After`` are waited on at least that long (never
shorter; a wait longer than ``longest_retry_after`` ends the request instead);
everything else retryable backs off exponentially with full jitter, within a
bounded number of attempts. An attempt signals "worth another try" by raising
:class:`RetryableFailure`; any other exception ends the request at once.
Response headers are read case-insensitively through :func:`header` only.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from daemon.clock import SystemClock
from daemon.metrics import Metrics

T = TypeVar("T")


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


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A response header by name, case-insensitively (HTTP and ``$batch`` items alike)."""
    wanted = name.lower()
    return next((str(v) for k, v in headers.items() if k.lower() == wanted), None)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the delta-seconds form), if present and valid."""
    value = header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class RetryableFailure(Exception):
    """One attempt failed in a way that another attempt may fix.

    ``lost`` says the request may have reached the server (a timeout, a dropped
    connection or a gateway error after sending): a write that is not
    idempotent must then be resolved by reading, not sent again blindly."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None,
                 lost: bool = True, detail: str | None = None, body: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.lost = lost
        self.detail = detail
        self.body = body  # the last answer's parsed body, for the caller's typed error
        self.attempts = 1


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    on_retry: Callable[[RetryableFailure, float], None] | None = None,
) -> T:
    """Run ``attempt`` until it returns, raises something else, or the policy
    gives up; then the last :class:`RetryableFailure` is raised (with
    ``attempts`` set), for the caller to translate into its typed error."""

    def stop(state: RetryCallState) -> bool:
        failure = _failure_of(state)
        if failure is not None and failure.retry_after is not None and failure.retry_after > policy.longest_retry_after:
            return True
        return state.attempt_number >= policy.max_attempts

    def wait(state: RetryCallState) -> float:
        failure = _failure_of(state)
        delay = policy.delay(failure.retry_after if failure else None, state.attempt_number, rng)
        return delay if delay is not None else 0.0

    def before_sleep(state: RetryCallState) -> None:
        failure = _failure_of(state)
        if on_retry is not None and failure is not None and state.next_action is not None:
            on_retry(failure, state.next_action.sleep)

    retrying = AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception_type(RetryableFailure),
                             sleep=clock.sleep, before_sleep=before_sleep, reraise=True)
    try:
        return await retrying(attempt)
    except RetryableFailure as failure:
        failure.attempts = retrying.statistics.get("attempt_number", 1)
        raise


def _failure_of(state: RetryCallState) -> RetryableFailure | None:
    error = state.outcome.exception() if state.outcome is not None else None
    return error if isinstance(error, RetryableFailure) else None


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

    async def retrying(self, attempt: Callable[[], Awaitable[T]],
                       on_retry: Callable[[RetryableFailure, float], None] | None = None) -> T:
        """``attempt`` under this peer's retry policy, clock and randomness (see :func:`with_retries`)."""
        return await with_retries(attempt, self.retry, self.clock, self.rng, on_retry)

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl=``: the configured context, or default verification."""
        return self.ssl_context if self.ssl_context is not None else True
