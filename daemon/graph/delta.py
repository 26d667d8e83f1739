"""Delta rounds: follow ``@odata.nextLink`` to the ``@odata.deltaLink``,
yielding changes as they arrive, either one round directly
(:class:`DeltaRound`, users and groups) or many rounds at once through
``$batch`` (:class:`BatchedRounds`, per-mailbox contacts and calendars).
Both read pages with :func:`read_page`.

Every link a page names is checked before it is used: it must be on the
tenant's Graph origin (:func:`~daemon.graph.clouds.graph_link`), and a round
is bounded by a :class:`~daemon.graph.paging.PageBudget` (no repeated link,
no more pages than the tenant's size explains). A stored deltaLink is
checked the same way before its round starts (:func:`stored_link`).

Only one page per round is held at a time, so memory stays flat however
large the tenant. New deltaLinks are handed to the caller, never stored
here: the caller commits them after applying the changes, so a crash
mid-way repeats the round from the last committed link instead of losing
changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from daemon.errors import GraphPayloadError
from daemon.graph.batch import BatchExecutor, BatchRequest, BatchResult
from daemon.graph.client import GraphClient, endpoint_label
from daemon.graph.clouds import graph_link
from daemon.graph.paging import PageBudget, entries
from daemon.links import same_origin, shown_origin
from daemon.logging import get_logger

log = get_logger(__name__)


class DeltaRound:
    """``async for change in DeltaRound(...)``; then read :attr:`delta_link`."""

    def __init__(
        self,
        client: GraphClient,
        start: str,
        headers: Mapping[str, str] | None = None,
        expected_objects: int = 0,
    ) -> None:
        self.client = client
        self.start = start
        self.headers = dict(headers or {})
        self.expected_objects = expected_objects  # stored copies: how many pages the round may explain
        self.delta_link: str | None = None
        self.pages = 0
        self.skipped = 0

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._changes()

    async def _changes(self) -> AsyncIterator[dict[str, Any]]:
        url: str | None = self.start
        budget = PageBudget(self.start, self.expected_objects)
        while url is not None:
            response = await self.client.get(url, self.headers)  # DeltaExpired propagates
            page = read_page(response.body, url, self.client.base_url)
            self.pages += 1
            self.skipped += page.skipped
            for item in page.items:
                yield item
            url = page.next_link
            if url is not None:
                budget.follow(url, entries(page.items))
            self.delta_link = page.delta_link


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_link: str | None
    delta_link: str | None
    skipped: int = 0


def read_page(body: Any, url: str, base_url: str) -> Page:
    """One delta page: its items with an id, and the next or the delta link
    (either only on ``base_url``'s origin, else :class:`~daemon.errors.GraphLinkRefused`)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("value"), list):
        raise GraphPayloadError(f"delta page from {endpoint_label(url)} has no 'value' list")
    items = [i for i in body["value"] if isinstance(i, dict) and isinstance(i.get("id"), str) and i["id"]]
    skipped = len(body["value"]) - len(items)
    if skipped:
        log.warning("skipping delta items without an id", endpoint=endpoint_label(url), items=skipped)
    next_link, delta_link = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
    if isinstance(next_link, str):
        return Page(items, graph_link(next_link, base_url, "@odata.nextLink"), None, skipped)
    if isinstance(delta_link, str):
        return Page(items, None, graph_link(delta_link, base_url, "@odata.deltaLink"), skipped)
    raise GraphPayloadError(f"delta page from {endpoint_label(url)} has neither @odata.nextLink nor @odata.deltaLink")


def stored_link(client: GraphClient, link: str | None, resource: str) -> str | None:
    """A stored deltaLink to follow, or None to start the round afresh.

    A stored link that is not on this tenant's Graph origin is never requested
    (no token is sent to it): it is treated like an expired delta state, so
    the round starts from scratch (for users a full round, which reconciles
    through the mass-deletion guard) and a warning names the origin. The
    run is not failed, because the usual cause is the operator's own change
    (``national_cloud``, ``graph_url``, a proxy added or removed): failing
    would stop the sync until someone edited the state database, while a
    full round is what an expired delta costs anyway, and the link it ends
    with replaces the stored one."""
    if link is None or same_origin(link, client.base_url):
        return link
    log.warning("a stored deltaLink is not on this tenant's Graph host; not followed, the round starts afresh",
                resource=resource, link_origin=shown_origin(link), graph=shown_origin(client.base_url))
    return None


def stored_links(client: GraphClient, links: Mapping[str, str], resource: str) -> dict[str, str]:
    """The stored deltaLinks of many rounds that may be followed (see :func:`stored_link`)."""
    return {key: link for key, link in links.items() if stored_link(client, link, f"{resource} {key}") is not None}


def relative(url: str) -> str:
    """A Graph link as a ``$batch`` item URL (below ``/v1.0``)."""
    parts = urlsplit(url)
    path = parts.path.split("/v1.0", 1)[-1]
    return path + (f"?{parts.query}" if parts.query else "")


@dataclass(frozen=True)
class RoundEvent:
    """One step of a batched round: a ``page`` of items, a round ``done`` with
    its deltaLink, or a ``failed`` request (``result`` says why)."""

    kind: str  # page | done | failed
    key: str
    items: list[dict[str, Any]] = field(default_factory=list)
    delta_link: str | None = None
    result: BatchResult | None = None
    error: Exception | None = None
    skipped: int = 0  # items of the page without a usable id (dropped)


class BatchedRounds:
    """Many delta rounds at once, each of its pages one ``$batch`` item.

    ``add`` starts (or restarts) a round; ``async for event in rounds``
    yields events until every round is done or failed."""

    read = staticmethod(read_page)  # how one page is read (a plain listing reads its own way)

    def __init__(self, client: GraphClient, headers: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.headers = dict(headers or {})
        self._pending: list[BatchRequest] = []
        self._budgets: dict[str, PageBudget] = {}

    def add(self, key: str, url: str, mailbox: str | None) -> None:
        """Start (or restart) the round ``key`` at a path or a link on this Graph origin."""
        if url.startswith(("https://", "http://")):
            graph_link(url, self.client.base_url, "deltaLink")
        self._budgets[key] = PageBudget(url)
        self._pending.append(BatchRequest(key, relative(url), mailbox=mailbox, headers=self.headers))

    def __aiter__(self) -> AsyncIterator[RoundEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RoundEvent]:
        while self._pending:
            requests, self._pending = self._pending, []
            async for result in BatchExecutor(self.client).run(requests):
                key = result.request.key
                if not result.ok:
                    yield RoundEvent("failed", key, result=result, error=result.error)
                    continue
                try:
                    page = self.read(result.body, result.request.url, self.client.base_url)
                    if page.next_link is not None:
                        self._budgets[key].follow(page.next_link, entries(page.items))
                except GraphPayloadError as err:  # a foreign link or a runaway round too: this round ends unfinished
                    yield RoundEvent("failed", key, result=result, error=err)
                    continue
                yield RoundEvent("page", key, items=page.items, skipped=page.skipped)
                if page.next_link is not None:
                    self._pending.append(BatchRequest(key, relative(page.next_link), mailbox=result.request.mailbox,
                                                      headers=self.headers))
                else:
                    yield RoundEvent("done", key, delta_link=page.delta_link)


def is_removed(change: Mapping[str, Any]) -> str | None:
    """The removal reason (``changed`` = soft delete, ``deleted``), or None."""
    removed = change.get("@removed")
    if isinstance(removed, Mapping):
        reason = removed.get("reason")
        return str(reason) if reason else "deleted"
    return None
