"""When each mailbox's contact-folder list is read again.

Folders change rarely, and a folder's contacts come every run through its
own delta, so listing every mailbox's folders on every run (one or more
``$batch`` items per mailbox, plus one per folder for its sub-folders) cost
more than the deltas themselves. A mailbox's folders are listed:

- when they were never listed (a new mailbox, or one retried after a 403);
- when asked to (:func:`relist_folders`): a folder's delta answered 404 or
  410 (the folder went), the last listing did not complete, or a change
  notification said the folder list changed;
- otherwise once per ``personal_contacts.folder_refresh_hours``: at the
  first run after a moment of the mailbox's own in each cycle (a stable hash
  of its id). So the mailboxes spread evenly over the cycle's runs instead of
  all refreshing on one, also right after they were all listed at once (a
  first run, an upgrade): each run lists about mailboxes x the time since
  the last run / the cycle, and no mailbox waits longer than a cycle plus
  the time between two runs.

A completed listing is remembered like a delta link (resource
``contact-folders``, key the mailbox's user id, the listing's URL as the
link): its ``updated_at`` says when it was listed, and dropping it makes the
mailbox due, which is all :func:`relist_folders` does.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from urllib.parse import quote

from state.store import Store

FOLDER_LISTINGS = "contact-folders"  # the delta_links resource that remembers each mailbox's last listing


def listing_due(user_id: str, listed_at: float | None, now: float, hours: int) -> bool:
    """Whether this run lists the mailbox's folders (see the module docstring); 0 hours: every run."""
    if listed_at is None or hours == 0:
        return True
    cycle = hours * 3600.0
    moment = zlib.crc32(user_id.encode()) / 2**32 * cycle  # the mailbox's own moment in each cycle
    return math.floor((now - moment) / cycle) > math.floor((listed_at - moment) / cycle)  # its moment passed


async def due_mailboxes(store: Store, tenant: str, user_ids: Iterable[str], now: float, hours: int) -> set[str]:
    """The mailboxes among ``user_ids`` whose folders this run lists."""
    listed = await store.delta_links_saved_at(tenant, FOLDER_LISTINGS)
    return {u for u in user_ids if listing_due(u, listed.get(u), now, hours)}


async def remember_listed(store: Store, tenant: str, user_ids: Iterable[str]) -> None:
    """These mailboxes' listings completed now."""
    await store.save_delta_links(tenant, FOLDER_LISTINGS,
                                 {u: f"/users/{quote(u, safe='')}/contactFolders" for u in user_ids})


async def relist_folders(store: Store, tenant: str, user_ids: Iterable[str]) -> None:
    """List these mailboxes' folders at the next run (or later in this one).

    The hook for change notifications: a notification saying a mailbox's
    contact folders changed calls ``relist_folders(store, tenant, [user_id])``."""
    await store.drop_delta_links(tenant, FOLDER_LISTINGS, keys=list(dict.fromkeys(user_ids)))
