"""Read the Outlook contacts of the synced mailboxes into stored copies.

Every run, each mailbox's folders are listed (one ``$batch`` item per
mailbox), so a new folder is picked up by the next run, Sync now included;
a folder that disappeared takes its contacts with it. Then one contacts
delta per (mailbox, folder), all through ``$batch``; a folder read without a
link (first time, expired state) is reconciled: what it no longer returns is
gone. A mailbox that answers 403 is reported and skipped until the tenant is
authorized again, or for a day. New deltaLinks wait for the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.config import TenantConfig
from daemon.errors import DeltaExpired
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.graph.delta import BatchedRounds, is_removed, stored_links
from daemon.logging import get_logger
from daemon.sync.plan_contacts import Mailbox
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

DEFAULT_FOLDER = "contacts"
PAGE_SIZE = 200
CONTACT_SELECT = "displayName,givenName,surname,companyName,jobTitle,businessPhones,homePhones,mobilePhone,emailAddresses"


@dataclass
class ContactsRead:
    links: dict[str, str] = field(default_factory=dict)  # "user:folder" -> new deltaLink
    full_rounds: int = 0  # folders read from scratch (their contacts may be on the PBX unrecorded)
    unreadable: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _initial(user_id: str, folder: str) -> str:
    return f"/users/{user_id}/contactFolders/{folder}/contacts/delta?$select={CONTACT_SELECT}"


@dataclass
class ContactsReader:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    authorized_at: float | None = None
    read: ContactsRead = field(default_factory=ContactsRead)

    async def __call__(self, mailboxes: Sequence[Mailbox]) -> ContactsRead:
        skip = await self.sync_store.skipped_unreadable(self.tenant.name, "contacts", self.authorized_at)
        readable = {m.user_id: m for m in mailboxes if m.user_id not in skip}
        folders = await self._discover_folders(readable)
        await self._read(readable, folders)
        return self.read

    async def _unreadable(self, mailbox: Mailbox) -> None:
        if mailbox.upn in self.read.unreadable:
            return
        await self.sync_store.mark_unreadable(self.tenant.name, mailbox.user_id, "contacts")
        self.read.unreadable.append(mailbox.upn)
        log.warning("mailbox not readable with this authorization (403); its contacts are skipped until the "
                    "tenant is authorized again, or for a day", tenant=self.tenant.name, mailbox=mailbox.upn)

    async def _discover_folders(self, mailboxes: dict[str, Mailbox]) -> dict[str, list[str]]:
        """Each readable mailbox's folders now; removed folders take their contacts along."""
        name = self.tenant.name
        known = await self.sync_store.folders(name)
        found: dict[str, list[str]] = {}
        requests = (BatchRequest(u, f"/users/{u}/contactFolders?$select=id", mailbox=u) for u in mailboxes)
        async for result in BatchExecutor(self.graph).run(requests):
            mailbox = mailboxes[result.request.key]
            if result.status == 403:
                await self._unreadable(mailbox)
                continue
            if not result.ok or not isinstance(result.body, dict):
                found[mailbox.user_id] = known.get(mailbox.user_id, [DEFAULT_FOLDER])  # as last known
                continue
            found[mailbox.user_id] = [DEFAULT_FOLDER] + [str(f["id"]) for f in result.body.get("value", [])
                                                         if isinstance(f, dict) and f.get("id")]
        gone = [(u, f) for u, ids in found.items() for f in known.get(u, []) if f not in ids]
        for user_id, folder in gone:
            await self.sync_store.remove_folder_copies(name, "contact", user_id, folder)
        await self.store.drop_delta_links(name, "contacts", keys=[f"{u}:{f}" for u, f in gone])
        changed = {u: ids for u, ids in found.items() if ids != known.get(u)}
        await self.sync_store.set_folders(name, changed)
        await self.sync_store.clear_unreadable(name, [u for u in found if u in mailboxes], "contacts")
        return found

    async def _read(self, mailboxes: dict[str, Mailbox], folders: dict[str, list[str]]) -> None:
        name = self.tenant.name
        links = stored_links(self.graph, await self.store.delta_links(name, "contacts"), "contacts")
        rounds = BatchedRounds(self.graph, {"Prefer": f"odata.maxpagesize={PAGE_SIZE}"})
        full: dict[str, set[str]] = {}  # folders read from scratch: the ids they returned
        for user_id, ids in folders.items():
            for folder in ids:
                key = f"{user_id}:{folder}"
                rounds.add(key, links.get(key) or _initial(user_id, folder), user_id)
                if key not in links:
                    full[key] = set()
        async for event in rounds:
            user_id, _, folder = event.key.partition(":")
            mailbox = mailboxes[user_id]
            if event.kind == "page":
                changes = [{**i, "_owner": user_id, "_folder": folder} if is_removed(i) is None else i for i in event.items]
                await self.sync_store.merge_changes(name, "contact", changes, owner=user_id, folder=folder)
                if event.key in full:
                    full[event.key] |= {c["id"] for c in changes if is_removed(c) is None}
            elif event.kind == "done" and event.delta_link is not None:
                self.read.links[event.key] = event.delta_link
                if event.key in full:  # reconcile: what a full round no longer returns is gone
                    await self.sync_store.remove_unseen(name, "contact", user_id, folder, full[event.key])
            elif event.kind == "failed":
                status = event.result.status if event.result is not None else 0
                if status == 403:
                    await self._unreadable(mailbox)
                elif status == 404:
                    continue  # the folder went between listing and reading, or no mailbox: next run
                elif isinstance(event.error, DeltaExpired) and event.key not in full:
                    await self.store.drop_delta_link(name, "contacts", event.key)
                    full[event.key] = set()
                    rounds.add(event.key, _initial(user_id, folder), user_id)
                else:
                    self.read.failures.append(f"contacts of {mailbox.upn}/{folder}: {event.error}")
        self.read.full_rounds = len(full)
