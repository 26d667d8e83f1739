"""Every contact folder of each mailbox, sub-folders included, or an honest
"incomplete".

``GET /users/{id}/contactFolders`` lists only the top-level folders under the
default Contacts folder, ten to a page; sub-folders come from each folder's
``childFolders``. Both are followed to their last page, sub-folders
recursively, bounded in depth and count. A mailbox whose listing did not
complete is reported as incomplete: its folders must not be taken for gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from daemon.errors import reason_of
from daemon.graph.client import GraphClient
from daemon.graph.listing import BatchedListings

DEFAULT_FOLDER = "contacts"
MAX_FOLDER_DEPTH = 6  # sub-folders below a top-level folder that are still listed
MAX_FOLDERS_PER_MAILBOX = 500


@dataclass
class FolderListing:
    folders: dict[str, list[str]] = field(default_factory=dict)  # user id -> folder ids (default first), complete only
    found: dict[str, list[str]] = field(default_factory=dict)  # user id -> folder ids seen, incomplete listings
    incomplete: dict[str, str] = field(default_factory=dict)  # user id -> why the listing is incomplete
    denied: set[str] = field(default_factory=set)  # 403: the mailbox is not readable


def _url(user_id: str, parent: str | None) -> str:
    below = f"/{quote(parent, safe='')}/childFolders" if parent else ""
    return f"/users/{quote(user_id, safe='')}/contactFolders{below}?$select=id"


async def list_folders(graph: GraphClient, user_ids: Iterable[str]) -> FolderListing:
    """Each mailbox's folders, followed through every page and every level."""
    listings = BatchedListings(graph)
    seen: dict[str, list[str]] = {}
    depth: dict[str, int] = {}
    result = FolderListing()
    for user_id in user_ids:
        seen[user_id] = [DEFAULT_FOLDER]
        listings.add(f"{user_id}|", _url(user_id, None), user_id)
        depth[f"{user_id}|"] = 0
    async for event in listings:
        user_id, _, parent = event.key.partition("|")
        if event.kind == "failed":
            status = event.result.status if event.result is not None else 0
            if status == 403 and not parent:
                result.denied.add(user_id)
            else:
                result.incomplete.setdefault(user_id, f"{'childFolders' if parent else 'contactFolders'}: {reason_of(event.error)}")
        elif event.kind == "page":
            for item in event.items:
                folder = str(item["id"])
                if folder in seen[user_id]:
                    continue
                if len(seen[user_id]) > MAX_FOLDERS_PER_MAILBOX:
                    result.incomplete.setdefault(user_id, f"more than {MAX_FOLDERS_PER_MAILBOX} folders")
                    break
                seen[user_id].append(folder)
                if depth[event.key] >= MAX_FOLDER_DEPTH:
                    result.incomplete.setdefault(user_id, f"folders nested deeper than {MAX_FOLDER_DEPTH} levels")
                    continue
                key = f"{user_id}|{folder}"
                depth[key] = depth[event.key] + 1
                listings.add(key, _url(user_id, folder), user_id)
    for user_id, folders in seen.items():
        if user_id in result.denied:
            continue
        ordered = [DEFAULT_FOLDER, *sorted(folders[1:])]
        (result.found if user_id in result.incomplete else result.folders)[user_id] = ordered
    return result
