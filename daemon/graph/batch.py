"""JSON batching: many small per-user requests in few ``POST /$batch`` calls.

Requests are packed 20 to a batch, with at most 4 in flight per mailbox
(Outlook's concurrency limit) counted across every batch in flight, and at
most ``max_batches_in_flight`` batches at once. Only the items that failed
with a retryable status are sent again, after at least their own
``Retry-After``; everything else is a final :class:`BatchResult`. Requests are
pulled from the caller's iterable lazily and results are yielded as batches
complete, so neither side is ever held whole in memory.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.errors import GraphPayloadError, M365SyncError
from daemon.graph.client import GraphClient, endpoint_label, error_for, is_retryable
from daemon.logging import get_logger
from daemon.retry import GraphBudget, header, retry_after_seconds

log = get_logger(__name__)

MAX_BATCH_SIZE = 20
PER_MAILBOX_IN_FLIGHT = 4
DEFAULT_BATCHES_IN_FLIGHT = 4


@dataclass(frozen=True)
class BatchRequest:
    """One GET below ``/v1.0`` (e.g. ``/users/{id}/photo``); ``mailbox`` limits concurrency."""

    key: str
    url: str
    mailbox: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    request: BatchRequest
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or bytes for binary content
    error: M365SyncError | None = None  # set when status is not 2xx

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class _Pending:
    request: BatchRequest
    attempt: int = 1
    not_before: float = 0.0


class BatchExecutor:
    def __init__(
        self,
        client: GraphClient,
        max_batches_in_flight: int | None = None,
        per_mailbox: int | None = None,
    ) -> None:
        self.client = client
        shared = client.transport.budget
        if max_batches_in_flight is not None or per_mailbox is not None or shared is None:
            shared = GraphBudget(max_batches_in_flight or DEFAULT_BATCHES_IN_FLIGHT, per_mailbox or PER_MAILBOX_IN_FLIGHT)
        self.budget = shared
        self.per_mailbox = shared.per_mailbox
        self.batches_sent = 0

    async def run(self, requests: Iterable[BatchRequest]) -> AsyncIterator[BatchResult]:
        """Yield one final result per request, in completion order."""
        source: Iterator[BatchRequest] = iter(requests)
        pending: deque[_Pending] = deque()
        budget = self.budget
        in_flight = budget.in_flight
        tasks: set[asyncio.Task[list[tuple[_Pending, BatchResult]]]] = set()
        holding: dict[asyncio.Task[list[tuple[_Pending, BatchResult]]], list[_Pending]] = {}
        buffer_size = MAX_BATCH_SIZE * budget.max_batches_in_flight * 2
        exhausted = False
        try:
            while True:
                if not exhausted and len(pending) < buffer_size:
                    more = list(itertools.islice(source, buffer_size - len(pending)))
                    exhausted = not more
                    pending.extend(_Pending(r) for r in more)
                while budget.batches < budget.max_batches_in_flight:
                    batch = self._pack(pending, in_flight)
                    if not batch:
                        break
                    for item in batch:
                        in_flight[item.request.mailbox or ""] += 1
                    budget.batches += 1
                    task = asyncio.create_task(self._send(batch))
                    holding[task] = batch
                    tasks.add(task)
                if not tasks:
                    if not pending and exhausted:
                        return
                    now = self.client.transport.clock.monotonic()
                    if pending and all(p.not_before > now for p in pending):
                        # Only items waiting out a Retry-After remain.
                        await self.client.transport.clock.sleep(max(min(p.not_before for p in pending) - now, 0.0))
                    elif pending:
                        # Another executor of this tenant holds the budget: wait for it to release some.
                        budget.released.clear()
                        await budget.released.wait()
                    continue
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    tasks.discard(task)
                    holding.pop(task, None)
                    budget.batches -= 1
                    budget.released.set()
                    for item, result in task.result():
                        in_flight[item.request.mailbox or ""] -= 1
                        retry_at = self._retry_at(item, result)
                        if retry_at is None:
                            yield result
                        else:
                            item.attempt += 1
                            item.not_before = retry_at
                            pending.append(item)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:  # give back what cancelled batches held
                budget.batches -= 1
                for item in holding.get(task, []):
                    in_flight[item.request.mailbox or ""] -= 1
            budget.released.set()

    def _pack(self, pending: deque[_Pending], in_flight: Counter[str]) -> list[_Pending]:
        """Up to 20 ready items without exceeding any mailbox's in-flight limit."""
        now = self.client.transport.clock.monotonic()
        batch: list[_Pending] = []
        counts = Counter(in_flight)
        keep: deque[_Pending] = deque()
        while pending and len(batch) < MAX_BATCH_SIZE:
            item = pending.popleft()
            mailbox = item.request.mailbox
            if item.not_before > now or (mailbox is not None and counts[mailbox] >= self.per_mailbox):
                keep.append(item)
                continue
            counts[mailbox or ""] += 1
            batch.append(item)
        pending.extendleft(reversed(keep))
        return batch

    def _retry_at(self, item: _Pending, result: BatchResult) -> float | None:
        if not is_retryable(result.status, result.body) or item.attempt >= self.client.transport.retry.max_attempts:
            return None
        retry_after = retry_after_seconds(result.headers)
        delay = retry_after if retry_after is not None else self.client.transport.retry.backoff(item.attempt, self.client.transport.rng)
        return self.client.transport.clock.monotonic() + delay

    async def _send(self, batch: list[_Pending]) -> list[tuple[_Pending, BatchResult]]:
        self.batches_sent += 1
        by_id = {str(index): item for index, item in enumerate(batch)}
        payload = {
            "requests": [
                {"id": id_, "method": "GET", "url": item.request.url, **({"headers": dict(item.request.headers)} if item.request.headers else {})}
                for id_, item in by_id.items()
            ]
        }
        response = await self.client.request("POST", "/$batch", json_body=payload)
        answers = response.body.get("responses") if isinstance(response.body, Mapping) else None
        if not isinstance(answers, list):
            raise GraphPayloadError("$batch answer has no 'responses' list")
        results: list[tuple[_Pending, BatchResult]] = []
        for answer in answers:
            item = by_id.pop(str(answer.get("id")), None) if isinstance(answer, Mapping) else None
            if item is None:
                continue
            results.append((item, self._result(item.request, answer)))
        for item in by_id.values():  # an item Graph did not answer is retried like a 503
            results.append((item, BatchResult(item.request, 503, {}, None, error_for(503, None, url=item.request.url))))
        return results

    def _result(self, request: BatchRequest, answer: Mapping[str, Any]) -> BatchResult:
        status = int(answer.get("status", 0))
        raw_headers = answer.get("headers")
        headers = {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, Mapping) else {}
        body = answer.get("body")
        content_type = header(headers, "content-type") or ""
        if isinstance(body, str) and content_type and "json" not in content_type:
            try:
                body = base64.b64decode(body)  # binary bodies travel base64-encoded
            except ValueError:
                pass
        self.client.record(endpoint_label(request.url), status)
        error = None if 200 <= status < 300 else error_for(status, body, url=request.url, retry_after=retry_after_seconds(headers))
        return BatchResult(request, status, headers, body, error)
