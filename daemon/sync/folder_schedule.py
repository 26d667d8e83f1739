"""When each mailbox's contact-folder list is read again.

Folders change rarely, and a folder's contacts come every run through its
own delta, so listing every mailbox's folders on every run (one or more
``$batch`` items per mailbox, plus one per folder for its sub-folders) cost
more than the deltas themselves. A mailbox's folders are listed:

- when they were never listed (a new mailbox, or one retried after a 403);
- when the last listing did not complete (incomplete, or interrupted);
- when asked to (:func:`relist_folders`): a change notification said the
  folder list changed (a folder's delta that answers 404 or 410 lists its
  mailbox again in the same run);
- otherwise once per ``personal_contacts.folder_refresh_hours``: at the
  first run after a moment of the mailbox's own in each cycle (a stable hash
  of its id). So the mailboxes spread evenly over the cycle's runs instead of
  all refreshing on one, also right after they were all listed at once (a
  first run, an upgrade): each run lists about mailboxes x the time since
  the last run / the cycle, and no mailbox waits longer than a cycle plus
  the time between two runs.

Each mailbox's listings are kept in ``folder_listings`` (``state.listings``):
a listing is begun before its first request and completed once it read every
folder, so one that was interrupted (the process died) or incomplete leaves
its mailbox due, and a request (:func:`relist_folders`) made while a listing
runs is not taken by it: the mailbox is listed again.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

from state.sync_store import SyncStore


def listing_due(user_id: str, listed_at: float | None, now: float, hours: int) -> bool:
    """Whether this run lists the mailbox's folders (see the module docstring); 0 hours: every run."""
    if listed_at is None or hours == 0:
        return True
    cycle = hours * 3600.0
    moment = zlib.crc32(user_id.encode()) / 2**32 * cycle  # the mailbox's own moment in each cycle
    return math.floor((now - moment) / cycle) > math.floor((listed_at - moment) / cycle)  # its moment passed


async def due_mailboxes(store: SyncStore, tenant: str, user_ids: Iterable[str], now: float, hours: int) -> set[str]:
    """The mailboxes among ``user_ids`` whose folders this run lists."""
    listings = await store.folder_listings(tenant)
    due = set()
    for user_id in user_ids:
        listing = listings.get(user_id)
        if listing is None or listing.pending or listing_due(user_id, listing.listed_at, now, hours):
            due.add(user_id)
    return due


async def begin_listing(store: SyncStore, tenant: str, user_ids: Iterable[str], now: float) -> None:
    """These mailboxes are listed now (before the first request: an interruption leaves them due)."""
    await store.begin_listings(tenant, user_ids, now)


async def remember_listed(store: SyncStore, tenant: str, user_ids: Iterable[str]) -> None:
    """These mailboxes' listings completed (as of when they began)."""
    await store.complete_listings(tenant, user_ids)


async def relist_folders(store: SyncStore, tenant: str, user_ids: Iterable[str]) -> None:
    """List these mailboxes' folders at the next run (or later in this one).

    The hook for change notifications: a notification saying a mailbox's
    contact folders changed calls ``relist_folders(sync_store, tenant, [user_id])``."""
    await store.request_listings(tenant, user_ids)
