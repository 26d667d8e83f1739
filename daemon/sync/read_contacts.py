"""Read the Outlook contacts of the synced mailboxes into stored copies.

A mailbox's folders, sub-folders included (``contact_folders``), are listed
on their own slower cadence (``folder_schedule``), and at once in the run
where one of its folders' deltas answers 404 or 410; the other mailboxes'
folders are the stored ones. A folder that disappeared from a *complete*
listing takes its contacts with it, and an incomplete listing deletes nothing
(the run is ``partial``, and the mailbox is listed again next run). Then one
contacts delta per (mailbox, folder), all through ``$batch``, so a run with
nothing changed costs one ``$batch`` item per folder; a folder read without a
link (first time, expired state) is reconciled: what it no longer returns is
gone. Where the cloud has no contacts
delta (21Vianet), each folder is listed whole on the cloud's own cadence and
compared with the stored copies the same way. A mailbox that answers 403 is
reported and skipped until the tenant is authorized again, or for a day. New
links wait for the commit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from daemon.config import TenantConfig
from daemon.errors import DeltaExpired, reason_of
from daemon.graph.client import GraphClient
from daemon.graph.clouds import cloud_of
from daemon.graph.delta import BatchedRounds, is_removed, stored_links
from daemon.graph.listing import BatchedListings
from daemon.graph.records import Rejected
from daemon.logging import get_logger
from daemon.sync.contact_folders import DEFAULT_FOLDER, list_folders
from daemon.sync.folder_schedule import begin_listing, due_mailboxes, remember_listed
from daemon.sync.intake import merge_checked, unidentified
from daemon.sync.plan_contacts import Mailbox
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

PAGE_SIZE = 200
CONTACT_SELECT = "displayName,givenName,surname,companyName,jobTitle,businessPhones,homePhones,mobilePhone,emailAddresses"
CONTACTS_LISTED_AT = "contacts-listed-at"  # clouds without contacts delta: when the last full listing completed


@dataclass
class ContactsRead:
    links: dict[str, str] = field(default_factory=dict)  # "user:folder" -> new deltaLink (or listing URL)
    full_rounds: int = 0  # folders read from scratch (their contacts may be on the PBX unrecorded)
    unreadable: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)  # recorded as failed objects


def _folder_path(user_id: str, folder: str) -> str:
    return f"/users/{quote(user_id, safe='')}/contactFolders/{quote(folder, safe='')}/contacts"


def _initial(user_id: str, folder: str, delta: bool = True) -> str:
    return f"{_folder_path(user_id, folder)}{'/delta' if delta else ''}?$select={CONTACT_SELECT}"


def _interleaved(folders: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    """(mailbox, folder), every mailbox's first folder, then every second, ...: at most 4 requests of a mailbox
    are in flight, so a mailbox's folders spread over batches that other mailboxes fill up to 20."""
    for layer in itertools.zip_longest(*([(u, f) for f in ids] for u, ids in folders.items())):
        yield from (pair for pair in layer if pair is not None)


@dataclass
class ContactsReader:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    authorized_at: float | None = None
    now: float = 0.0
    read: ContactsRead = field(default_factory=ContactsRead)

    async def __call__(self, mailboxes: Sequence[Mailbox]) -> ContactsRead:
        cloud = cloud_of(self.tenant)
        if not cloud.contacts_delta and not await self._listing_due(cloud.contacts_listing_seconds):
            return self.read  # the stored copies stand until the next listing
        skip = await self.sync_store.skipped_unreadable(self.tenant.name, "contacts", self.authorized_at)
        readable = {m.user_id: m for m in mailboxes if m.user_id not in skip}
        folders = await self._folders(readable)
        went = await self._read(readable, folders, delta=cloud.contacts_delta)
        if went:  # a folder's delta answered 404 or 410: list those mailboxes now, and read their new folders
            relisted = await self._discover_folders({u: readable[u] for u in went})
            new = {u: [f for f in ids if f not in folders[u]] for u, ids in relisted.items()}
            await self._read(readable, {u: ids for u, ids in new.items() if ids}, delta=cloud.contacts_delta)
        if not cloud.contacts_delta and not self.read.failures:
            await self.sync_store.set_value(self.tenant.name, CONTACTS_LISTED_AT, repr(self.now))
        return self.read

    async def _listing_due(self, every: float) -> bool:
        last = await self.sync_store.value(self.tenant.name, CONTACTS_LISTED_AT)
        return last is None or self.now - float(last) >= every

    async def _unreadable(self, mailbox: Mailbox) -> None:
        if mailbox.upn in self.read.unreadable:
            return
        await self.sync_store.mark_unreadable(self.tenant.name, mailbox.user_id, "contacts")
        self.read.unreadable.append(mailbox.upn)
        log.warning("mailbox not readable with this authorization (403); its contacts are skipped until the "
                    "tenant is authorized again, or for a day", tenant=self.tenant.name, mailbox=mailbox.upn)

    async def _folders(self, mailboxes: dict[str, Mailbox]) -> dict[str, list[str]]:
        """Each readable mailbox's folders: listed where due, else as stored (a 403 leaves its mailbox out)."""
        name = self.tenant.name
        retried = set(await self.sync_store.unreadable(name, "contacts")) & set(mailboxes)  # a 403 a day ago: list
        due = retried | await due_mailboxes(self.sync_store, name, (u for u in mailboxes if u not in retried), self.now,
                                            self.tenant.personal_contacts.folder_refresh_hours)
        listed = await self._discover_folders({u: m for u, m in mailboxes.items() if u in due})
        known = await self.sync_store.folders(name) if len(listed) < len(mailboxes) else {}
        return {u: listed[u] if u in due else known.get(u, [DEFAULT_FOLDER])
                for u in mailboxes if u in listed or u not in due}

    async def _discover_folders(self, mailboxes: dict[str, Mailbox]) -> dict[str, list[str]]:
        """These readable mailboxes' folders now; folders gone from a complete listing take their contacts along."""
        name = self.tenant.name
        if not mailboxes:
            return {}
        known = await self.sync_store.folders(name)
        await begin_listing(self.sync_store, name, mailboxes, self.now)
        listing = await list_folders(self.graph, mailboxes)
        for user_id in listing.denied:
            await self._unreadable(mailboxes[user_id])
        found = dict(listing.folders)
        for user_id, reason in listing.incomplete.items():
            # Incomplete: what was not listed may still be there. Read the known and the new; delete nothing.
            before = known.get(user_id, [DEFAULT_FOLDER])
            found[user_id] = before + [f for f in listing.found.get(user_id, []) if f not in before]
            self.read.failures.append(f"contact folders of {mailboxes[user_id].upn}: listing incomplete ({reason}); "
                                      "no folder is taken for gone this run")
        gone = [(u, f) for u, ids in listing.folders.items() for f in known.get(u, []) if f not in ids]
        for user_id, folder in gone:
            await self.sync_store.remove_folder_copies(name, "contact", user_id, folder)
        await self.store.drop_delta_links(name, "contacts", keys=[f"{u}:{f}" for u, f in gone])
        changed = {u: ids for u, ids in listing.folders.items() if ids != known.get(u)}
        await self.sync_store.set_folders(name, changed)
        await self.sync_store.clear_unreadable(name, [u for u in found if u in mailboxes], "contacts")
        await remember_listed(self.sync_store, name, listing.folders)  # after the folders are stored; the
        # incomplete listings stay begun and not completed: the next run lists those mailboxes again
        return found

    async def _read(self, mailboxes: dict[str, Mailbox], folders: dict[str, list[str]], *, delta: bool) -> set[str]:
        """Read these folders; returns the mailboxes with a folder whose read answered 404 or 410 (gone?)."""
        name = self.tenant.name
        went: set[str] = set()
        links = stored_links(self.graph, await self.store.delta_links(name, "contacts"), "contacts")
        headers = {"Prefer": f"odata.maxpagesize={PAGE_SIZE}"}
        rounds = BatchedRounds(self.graph, headers) if delta else BatchedListings(self.graph, headers)
        full: dict[str, set[str]] = {}  # folders read whole: the ids they returned
        first_time: set[str] = set()  # of those, the ones never read before (their contacts may be on the PBX)
        for user_id, folder in _interleaved(folders):
            key = f"{user_id}:{folder}"
            if key not in links:
                first_time.add(key)
            if delta and key in links:
                rounds.add(key, links[key], user_id)
            else:
                rounds.add(key, _initial(user_id, folder, delta), user_id)
                full[key] = set()
        async for event in rounds:
            user_id, _, folder = event.key.partition(":")
            mailbox = mailboxes[user_id]
            if event.kind == "page":
                changes = [{**i, "_owner": user_id, "_folder": folder} if isinstance(i, dict) and is_removed(i) is None
                           else i for i in event.items]
                rejected = await merge_checked(self.sync_store, name, "contact", changes, owner=user_id, folder=folder)
                self.read.rejected += rejected + ([unidentified("contact", event.skipped)] if event.skipped else [])
                if event.key in full:  # a rejected contact keeps its copy: never taken for gone
                    full[event.key] |= {c["id"] for c in changes if isinstance(c, dict) and isinstance(c.get("id"), str)
                                        and is_removed(c) is None}
            elif event.kind == "done" and (event.delta_link is not None or not delta):
                self.read.links[event.key] = event.delta_link or _initial(user_id, folder, delta)
                if event.key in full:  # reconcile: what a full round no longer returns is gone
                    await self.sync_store.remove_unseen(name, "contact", user_id, folder, full[event.key])
            elif event.kind == "failed":
                status = event.result.status if event.result is not None else 0
                if status == 403:
                    await self._unreadable(mailbox)
                elif status == 404:  # the folder went (the default one never goes: no mailbox, skipped)
                    if folder != DEFAULT_FOLDER:
                        went.add(user_id)
                elif delta and isinstance(event.error, DeltaExpired) and event.key not in full:
                    if folder != DEFAULT_FOLDER:
                        went.add(user_id)  # an expired state, or the folder went: its round starts afresh, and the list
                    await self.store.drop_delta_link(name, "contacts", event.key)
                    full[event.key] = set()
                    first_time.add(event.key)
                    rounds.add(event.key, _initial(user_id, folder), user_id)
                else:
                    self.read.failures.append(f"contacts of {mailbox.upn}/{folder}: {reason_of(event.error)}")
        self.read.full_rounds += len(first_time & set(full))
        return went
