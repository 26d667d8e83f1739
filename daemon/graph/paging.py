"""How far a paged Graph answer is followed.

A server that sends an ``@odata.nextLink`` pointing at itself, or an endless
run of fresh links, would otherwise hold the tenant until the run's time
limit, thousands of requests a minute. Every paged read (delta rounds
directly and inside ``$batch``, the ``/users`` listing, transitive members)
keeps one :class:`PageBudget`:

- a link seen before in the same round ends it at once;
- so do more pages than the tenant's size explains:
  ``SLACK_PAGES + 2 * (stored objects + entries received) / page size``,
  where ``page size`` is the smallest page Graph sends by default (Outlook's
  10), so a round that returns what it should never comes near it, and a run
  of empty or near-empty pages is stopped after about ``SLACK_PAGES`` more
  than the stored copies explain;
- and, whatever the counts, ``HARD_CAP_PAGES`` (a million users at 100 a page
  is 10,000 pages).

The error, :class:`~daemon.errors.GraphPagingRunaway`, is raised before the
next request; the round is unfinished, so the caller neither reconciles
(nothing counts as gone) nor commits a deltaLink.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from daemon.errors import GraphPagingRunaway
from daemon.graph.client import GraphClient, endpoint_label
from daemon.graph.clouds import graph_link

SLACK_PAGES = 50
HARD_CAP_PAGES = 20_000
SMALLEST_PAGE = 10  # Outlook's default page size; directory pages are larger


def entries(items: Sequence[Mapping[str, Any]]) -> int:
    """Objects in a page, counting a group's ``members@delta`` (large groups span many pages)."""
    total = len(items)
    for item in items:
        members = item.get("members@delta")
        if isinstance(members, list):
            total += len(members)
    return total


class PageBudget:
    """One round's pages: ``follow(link, items)`` before each next request."""

    def __init__(self, start: str, expected_objects: int = 0, page_size: int = SMALLEST_PAGE) -> None:
        self.endpoint = endpoint_label(start)
        self.expected = max(0, expected_objects)
        self.page_size = max(1, page_size)
        self.pages = 0
        self.received = 0
        self._seen = {_digest(start)}

    @property
    def limit(self) -> int:
        explained = SLACK_PAGES + math.ceil(2 * (self.expected + self.received) / self.page_size)
        return min(HARD_CAP_PAGES, explained)

    def follow(self, link: str, received: int) -> str:
        """Count the page just read (``received`` objects); ``link`` if it may be requested next."""
        self.pages += 1
        self.received += received
        digest = _digest(link)
        if digest in self._seen:
            raise GraphPagingRunaway(
                f"Graph's {self.endpoint} sent a link it had already sent, after {self.pages} pages; the round was stopped",
                hint="nothing of this round counts as removed; the next run starts it again",
            )
        if self.pages >= self.limit:
            raise GraphPagingRunaway(
                f"Graph's {self.endpoint} went on past {self.pages} pages, more than {self.expected} stored and "
                f"{self.received} received objects explain; the round was stopped",
                hint="nothing of this round counts as removed; the next run starts it again",
            )
        self._seen.add(digest)
        return link


async def listing_pages(client: GraphClient, url: str, first: Any = None) -> AsyncIterator[Any]:
    """The bodies of a plain listing (``value`` and ``@odata.nextLink``), page by
    page, within a :class:`PageBudget` and on the tenant's Graph origin; ``first``
    is the first page's body when it was read already (inside ``$batch``).

    The next page is asked for before a page is handed over, so Graph prepares it
    while the caller parses and stores this one (a first read of 10k users is ten
    pages, and nothing reaches the PBX before the last one)."""
    budget = PageBudget(url)
    body = first if first is not None else (await client.get(url)).body
    while True:
        next_link = body.get("@odata.nextLink") if isinstance(body, Mapping) else None
        if not isinstance(next_link, str):
            yield body
            return
        values = body.get("value")
        budget.follow(graph_link(next_link, client.base_url, "@odata.nextLink"), len(values) if isinstance(values, list) else 0)
        following = asyncio.ensure_future(client.get(next_link))
        try:
            yield body
        except BaseException:  # the caller stopped early (closed, or an error thrown in): not wanted
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            raise
        body = (await following).body


def _digest(link: str) -> bytes:
    """A link's fingerprint: links can be kilobytes long, 16 bytes each is enough to spot a repeat."""
    return hashlib.blake2b(link.encode(), digest_size=16).digest()
