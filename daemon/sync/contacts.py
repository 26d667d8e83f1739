"""Outlook contacts into the PBX directory: each synced user's personal
contacts (``directory = personal``) and the contacts of shared mailboxes
(``directory = company``).

Read: one contacts delta per (mailbox, folder), all of them through
``$batch`` (20 per batch, 4 in flight per mailbox); a mailbox's folders are
listed when first seen and re-listed daily, the default folder is the
well-known ``contacts``; a folder that disappears (404) takes its contacts
with it. A mailbox that answers 403 is reported once and skipped.
Plan from the stored copies, apply, then commit each folder's deltaLink.
A contact about to be created is journaled first, so after a crash it is
looked up by externalId instead of being created twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from daemon.config import TenantConfig
from daemon.errors import DeltaExpired
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.graph.delta import is_removed
from daemon.logging import get_logger
from daemon.pbx.client import PbxClient, PbxOperation, PbxWriter
from daemon.pbx.mapping import contact_payload, has_phone_number, patch_operations, payload_hash
from state.store import Store
from state.sync_store import SyncStore

log = get_logger(__name__)

DEFAULT_FOLDER = "contacts"
FOLDER_RECHECK_SECONDS = 86400.0
PAGE_SIZE = 200
CONTACT_SELECT = "displayName,givenName,surname,companyName,jobTitle,businessPhones,homePhones,mobilePhone,emailAddresses"
PENDING = "pending-create"


@dataclass(frozen=True)
class Mailbox:
    user_id: str
    upn: str
    directory: str  # personal | company
    owner_pbx_id: str | None


@dataclass
class ContactReport:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    skipped_without_phone: int = 0

    def add(self, kind: str, amount: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + amount


def relative(url: str) -> str:
    """A Graph link as a ``$batch`` item URL (below ``/v1.0``)."""
    parts = urlsplit(url)
    path = parts.path.split("/v1.0", 1)[-1]
    return path + (f"?{parts.query}" if parts.query else "")


def _initial(mailbox: Mailbox, folder: str) -> str:
    return f"/users/{mailbox.user_id}/contactFolders/{folder}/contacts/delta?$select={CONTACT_SELECT}"


@dataclass
class ContactSync:
    tenant: TenantConfig
    store: Store
    sync_store: SyncStore
    graph: GraphClient
    pbx: PbxClient
    writer: PbxWriter
    now: Callable[[], float] = time.time
    pending_links: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.tenant.personal_contacts.enabled or self.tenant.shared_mailbox.enabled

    async def run(self, mailboxes: list[Mailbox], report: ContactReport) -> None:
        """Read every mailbox's changes, plan, apply, commit."""
        readable = [m for m in mailboxes if not await self._is_unreadable(m.user_id)]
        await self._refresh_folders(readable, report)
        await self._read(readable, report)
        await self._apply(mailboxes, report)
        for key, link in self.pending_links.items():
            await self.store.save_delta_link(self.tenant.name, "contacts", link, key)
        self.pending_links.clear()

    # --- read ---

    async def _is_unreadable(self, user_id: str) -> bool:
        return await self.sync_store.value(self.tenant.name, f"unreadable:{user_id}") is not None

    async def _mark_unreadable(self, mailbox: Mailbox, report: ContactReport) -> None:
        await self.sync_store.set_value(self.tenant.name, f"unreadable:{mailbox.user_id}", "403")
        report.unreadable.append(mailbox.upn)
        log.warning("mailbox not readable with this authorization (403); its contacts are skipped",
                    tenant=self.tenant.name, mailbox=mailbox.upn)

    async def _refresh_folders(self, mailboxes: list[Mailbox], report: ContactReport) -> None:
        name = self.tenant.name
        due = []
        for mailbox in mailboxes:
            checked = await self.sync_store.value(name, f"folders-checked:{mailbox.user_id}")
            if checked is None or self.now() - float(checked) >= FOLDER_RECHECK_SECONDS:
                due.append(mailbox)
        by_id = {m.user_id: m for m in due}
        requests = (BatchRequest(m.user_id, f"/users/{m.user_id}/contactFolders?$select=id,displayName", mailbox=m.user_id) for m in due)
        async for result in BatchExecutor(self.graph).run(requests):
            mailbox = by_id[result.request.key]
            if result.status == 403:
                await self._mark_unreadable(mailbox, report)
                continue
            if not result.ok or not isinstance(result.body, dict):
                continue
            folders = [DEFAULT_FOLDER] + [str(f["id"]) for f in result.body.get("value", []) if isinstance(f, dict) and f.get("id")]
            await self.sync_store.set_value(name, f"folders:{mailbox.user_id}", ",".join(folders))
            await self.sync_store.set_value(name, f"folders-checked:{mailbox.user_id}", repr(self.now()))

    async def _folders(self, mailbox: Mailbox) -> list[str]:
        stored = await self.sync_store.value(self.tenant.name, f"folders:{mailbox.user_id}")
        return stored.split(",") if stored else [DEFAULT_FOLDER]

    async def _read(self, mailboxes: list[Mailbox], report: ContactReport) -> None:
        name = self.tenant.name
        pending: list[tuple[Mailbox, str, str]] = []  # mailbox, folder, url
        full_rounds: dict[str, set[str]] = {}  # folders read from scratch: the ids they returned
        for mailbox in mailboxes:
            if await self._is_unreadable(mailbox.user_id):
                continue
            for folder in await self._folders(mailbox):
                key = f"{mailbox.user_id}:{folder}"
                link = await self.store.delta_link(name, "contacts", key)
                pending.append((mailbox, folder, relative(link) if link else _initial(mailbox, folder)))
                if not link:
                    full_rounds[key] = set()
        prefer = {"Prefer": f"odata.maxpagesize={PAGE_SIZE}"}
        while pending:
            by_key = {f"{m.user_id}:{folder}": (m, folder) for m, folder, _ in pending}
            requests = [BatchRequest(f"{m.user_id}:{folder}", url, mailbox=m.user_id, headers=prefer) for m, folder, url in pending]
            pending = []
            async for result in BatchExecutor(self.graph).run(requests):
                mailbox, folder = by_key[result.request.key]
                if result.status == 403:
                    await self._mark_unreadable(mailbox, report)
                    continue
                if result.status == 404 and folder != DEFAULT_FOLDER:
                    await self._folder_gone(mailbox, folder)
                    continue
                if result.status == 404:
                    continue  # no mailbox (e.g. no Exchange licence): nothing to read
                if isinstance(result.error, DeltaExpired) and result.request.key not in full_rounds:
                    # The folder's delta state expired: read it afresh now, and reconcile.
                    await self.store.drop_delta_link(name, "contacts", result.request.key)
                    full_rounds[result.request.key] = set()
                    pending.append((mailbox, folder, _initial(mailbox, folder)))
                    continue
                if not result.ok or not isinstance(result.body, dict):
                    report.failures.append(f"contacts of {mailbox.upn}/{folder}: {result.error}")
                    continue
                changes = []
                for item in result.body.get("value", []):
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        if is_removed(item) is None:
                            item = {**item, "_owner": mailbox.user_id, "_folder": folder}
                        changes.append(item)
                await self.sync_store.merge_changes(name, "contact", changes)
                key = result.request.key
                if key in full_rounds:
                    full_rounds[key] |= {c["id"] for c in changes if is_removed(c) is None}
                next_link = result.body.get("@odata.nextLink")
                delta_link = result.body.get("@odata.deltaLink")
                if isinstance(next_link, str):
                    pending.append((mailbox, folder, relative(next_link)))
                elif isinstance(delta_link, str):
                    self.pending_links[key] = delta_link
                    if key in full_rounds:  # reconcile: what a full round no longer returns is gone
                        await self.sync_store.remove_unseen(name, "contact", mailbox.user_id, folder, full_rounds[key])

    async def _folder_gone(self, mailbox: Mailbox, folder: str) -> None:
        """A removed folder: forget its link; its contacts are removed with it."""
        name = self.tenant.name
        await self.store.drop_delta_link(name, "contacts", f"{mailbox.user_id}:{folder}")
        folders = [f for f in await self._folders(mailbox) if f != folder]
        await self.sync_store.set_value(name, f"folders:{mailbox.user_id}", ",".join(folders))
        await self.sync_store.remove_where(name, "contact", "_folder", folder, "_owner", mailbox.user_id)

    # --- plan and apply ---

    async def _apply(self, mailboxes: list[Mailbox], report: ContactReport) -> None:
        name = self.tenant.name
        owners = {m.user_id: m for m in mailboxes}
        require_phone = self.tenant.personal_contacts.require_phone
        operations: list[tuple[PbxOperation, dict[str, Any] | None, bool]] = []
        async for copy, synced in self.sync_store.iter_with_synced(name, "contact"):
            graph_id = copy.id if copy is not None else (synced.graph_id if synced else None)
            if graph_id is None:
                continue
            pbx_id = synced.pbx_id if synced is not None else None
            mailbox = owners.get(str(copy.data.get("_owner"))) if copy is not None else None
            wanted = copy is not None and copy.removed is None and mailbox is not None
            if wanted and require_phone and mailbox is not None and mailbox.directory == "personal" and copy is not None:
                if not has_phone_number(copy.data):
                    wanted = False
                    report.skipped_without_phone += 1
            if not wanted:
                if pbx_id is not None:
                    operations.append((PbxOperation("delete", "Contact", graph_id, pbx_id=pbx_id), None, False))
                elif synced is not None or (copy is not None and copy.removed):
                    await self._forget(graph_id, copy is not None and copy.removed is not None)
                continue
            assert copy is not None and mailbox is not None
            desired = contact_payload(copy.data, directory=mailbox.directory, source=mailbox.upn,
                                      owner=mailbox.owner_pbx_id if mailbox.directory == "personal" else None)
            if pbx_id is None:
                recover = synced is not None and synced.payload_hash == PENDING
                operations.append((PbxOperation("create", "Contact", graph_id, payload=desired), desired, recover))
            elif synced is not None and synced.payload_hash != payload_hash(desired):
                ops = patch_operations(synced.payload or {}, desired)
                operations.append((PbxOperation("update", "Contact", graph_id, payload=desired, operations=ops,
                                                pbx_id=pbx_id, etag=synced.etag), desired, False))
        await self._write(operations, report)

    async def _write(self, planned: list[tuple[PbxOperation, dict[str, Any] | None, bool]], report: ContactReport) -> None:
        name = self.tenant.name
        ready: list[PbxOperation] = []
        payloads: dict[int, dict[str, Any] | None] = {}
        for operation, payload, recover in planned:
            if recover:  # journaled before a crash: it may exist already
                existing = await self.pbx.find_by_external_id("Contact", operation.external_id)
                if existing is not None:
                    operation = PbxOperation("update", "Contact", operation.external_id, payload=payload,
                                             operations=patch_operations({}, payload or {}), pbx_id=existing.id)
            elif operation.action == "create":
                await self.sync_store.journal_pending(name, "contact", operation.external_id, PENDING)
            ready.append(operation)
            payloads[id(operation)] = payload
        async for outcome in self.writer.execute_many(ready):
            operation = outcome.operation
            if not outcome.ok:
                report.add("failed")
                report.failures.append(f"contact {operation.external_id}: {outcome.error}")
                continue
            report.add(operation.action)
            if operation.action == "delete":
                copy = await self.sync_store.graph_copy(name, "contact", operation.external_id)
                await self._forget(operation.external_id, copy is None or copy.removed is not None)
                continue
            payload = payloads.get(id(operation))
            await self.sync_store.record_push(
                name, "contact", operation.external_id, pbx_id=outcome.pbx_id or operation.pbx_id, payload=payload,
                payload_hash=payload_hash(payload) if payload else None, etag=outcome.etag, active=None,
                out_of_scope_since=None, photo_etag=None,
            )

    async def _forget(self, graph_id: str, purge_copy: bool) -> None:
        await self.sync_store.forget_synced(self.tenant.name, "contact", graph_id)
        if purge_copy:
            await self.sync_store.purge_graph_object(self.tenant.name, "contact", graph_id)
