"""Plain collection listings (no delta) followed to their last page.

Outlook pages its collections by 10 unless asked otherwise, so a listing that
stops at its first page silently loses the rest: every listing here follows
``@odata.nextLink`` to the end, many at once through ``$batch``, and says
whether it got there. The last page simply has no nextLink (and no deltaLink).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.errors import GraphPayloadError
from daemon.graph.client import endpoint_label
from daemon.graph.clouds import graph_link
from daemon.graph.delta import BatchedRounds, Page


def read_listing_page(body: Any, url: str, base_url: str) -> Page:
    """One page of a listing: its items with an id, and the next link if any (only on ``base_url``'s origin)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("value"), list):
        raise GraphPayloadError(f"listing page from {endpoint_label(url)} has no 'value' list")
    items = [i for i in body["value"] if isinstance(i, dict) and isinstance(i.get("id"), str) and i["id"]]
    next_link = body.get("@odata.nextLink")
    link = graph_link(next_link, base_url, "@odata.nextLink") if isinstance(next_link, str) else None
    return Page(items, link, None, len(body["value"]) - len(items))


class BatchedListings(BatchedRounds):
    """Many listings at once; a listing is ``done`` (without a deltaLink) after its last page."""

    read = staticmethod(read_listing_page)
