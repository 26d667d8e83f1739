"""One delta round: follow ``@odata.nextLink`` to the ``@odata.deltaLink``,
yielding changes as they arrive.

Only one page is held at a time, so memory stays flat however large the
tenant. The new deltaLink is handed to the caller, never stored here: the
caller commits it after applying the changes, so a crash mid-way repeats the
round from the last committed link instead of losing changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from daemon.errors import GraphPayloadError
from daemon.graph.client import GraphClient, endpoint_label
from daemon.logging import get_logger

log = get_logger(__name__)


class DeltaRound:
    """``async for change in DeltaRound(...)``; then read :attr:`delta_link`."""

    def __init__(
        self,
        client: GraphClient,
        start: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.start = start
        self.headers = dict(headers or {})
        self.delta_link: str | None = None
        self.pages = 0
        self.skipped = 0

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._changes()

    async def _changes(self) -> AsyncIterator[dict[str, Any]]:
        url: str | None = self.start
        while url is not None:
            response = await self.client.get(url, self.headers)  # DeltaExpired propagates
            page = response.body
            if not isinstance(page, Mapping) or not isinstance(page.get("value"), list):
                raise GraphPayloadError(f"delta page from {endpoint_label(url)} has no 'value' list")
            self.pages += 1
            for item in page["value"]:
                if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                    yield item
                else:
                    self.skipped += 1
                    log.warning("skipping a delta item without an id", endpoint=endpoint_label(url))
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            if isinstance(next_link, str):
                url = next_link
            elif isinstance(delta_link, str):
                self.delta_link = delta_link
                url = None
            else:
                raise GraphPayloadError(
                    f"delta page from {endpoint_label(url)} has neither @odata.nextLink nor @odata.deltaLink"
                )


def is_removed(change: Mapping[str, Any]) -> str | None:
    """The removal reason (``changed`` = soft delete, ``deleted``), or None."""
    removed = change.get("@removed")
    if isinstance(removed, Mapping):
        reason = removed.get("reason")
        return str(reason) if reason else "deleted"
    return None
