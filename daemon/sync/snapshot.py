"""The snapshot every planner reads: what the PBX holds (read once per run),
the numbers handed out, group membership, held deprovisions, shared
mailboxes, photo versions and the create journal. Taken after the reads and
before any write, so planning is pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from daemon.config import TenantConfig
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import EXTENSION_NUMBER_PATHS, PBX_GROUP, PBX_USER, Kind
from daemon.pbx.types import PbxObject
from daemon.sync.numbering import Allocation
from state.sync_store import SyncStore


@dataclass(frozen=True)
class InventoryEntry:
    pbx_id: str
    extension: str | None


@dataclass(frozen=True)
class Inventory:
    """What the PBX holds: every extension number (users and groups), and our
    objects by externalId (contacts only when a run needs them: after a full
    contacts round, e.g. when the state was lost)."""

    numbers: set[str] = field(default_factory=set)
    holders: dict[str, str] = field(default_factory=dict)  # number -> its holder's externalId ("" for none)
    users: dict[str, InventoryEntry] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    contacts: dict[str, str] = field(default_factory=dict)

    def add(self, obj: PbxObject) -> None:
        """A PBX user or group, as listed or looked up: its number, and ours by externalId."""
        part = obj.data.get(PBX_USER if obj.kind == "User" else PBX_GROUP)
        extension = part.get("extensionNumber") if isinstance(part, Mapping) else None
        if extension:
            self.numbers.add(str(extension))
            self.holders[str(extension)] = obj.external_id or ""
        if obj.kind == "User" and obj.external_id:
            self.users[obj.external_id] = InventoryEntry(obj.id, str(extension) if extension else None)
        elif obj.external_id:
            self.groups[obj.external_id] = obj.id


async def read_inventory(pbx: PbxClient, *, contacts: bool = False) -> Inventory:
    """One paged listing per kind, only the attributes needed."""
    inventory = Inventory()
    numbered: tuple[Kind, ...] = ("User", "Group")
    for kind in numbered:
        async for obj in pbx.iter_objects(kind, [EXTENSION_NUMBER_PATHS[kind]]):
            inventory.add(obj)
    if contacts:
        contact_kind: Kind = "Contact"
        async for obj in pbx.iter_objects(contact_kind, ["id"]):
            if obj.external_id:
                inventory.contacts[obj.external_id] = obj.id
    return inventory


@dataclass(frozen=True)
class Snapshot:
    tenant: TenantConfig
    now: float
    inventory: Inventory
    allocations: tuple[Allocation, ...]
    group_members: Mapping[str, frozenset[str]]  # configured group -> user ids
    held: Mapping[str, tuple[str, str, bool]]  # graph id -> (kind, action, approved)
    synced_counts: Mapping[str, int]
    shared_mailboxes: Mapping[str, str]  # user id -> userPrincipalName
    photos: Mapping[str, str | None]  # user id -> mediaEtag, for the users checked this run
    pending_creates: Mapping[str, frozenset[str]]  # kind -> journaled create ids

    @property
    def members_in_scope(self) -> frozenset[str]:
        """Members of any configured group (the INCLUDE scope)."""
        return frozenset().union(*self.group_members.values()) if self.group_members else frozenset()

    @property
    def approved(self) -> frozenset[str]:
        return frozenset(i for i, (_, _, approved) in self.held.items() if approved)


async def take_snapshot(tenant: TenantConfig, sync_store: SyncStore, inventory: Inventory | None, now: float, *,
                        shared: Mapping[str, str], photos: Mapping[str, str | None]) -> Snapshot:
    """Without an inventory (no number is needed this run) the numbers handed out are not loaded either."""
    name = tenant.name
    members = {g: frozenset(await sync_store.members_of(name, [g])) for g in tenant.groups}
    snapshot = Snapshot(
        tenant=tenant, now=now, inventory=Inventory(),
        allocations=(),
        group_members=members,
        held=await sync_store.held(name),
        synced_counts={kind: await sync_store.count_synced(name, kind) for kind in ("user", "group", "contact")},
        shared_mailboxes=dict(shared), photos=dict(photos),
        pending_creates={kind: frozenset(await sync_store.pending_creates(name, kind))
                         for kind in ("user", "group", "contact")},
    )
    return await with_inventory(snapshot, sync_store, inventory) if inventory is not None else snapshot


async def with_inventory(snapshot: Snapshot, sync_store: SyncStore, inventory: Inventory) -> Snapshot:
    """The snapshot once numbers are needed after all: the PBX's, and those handed out."""
    return replace(snapshot, inventory=inventory,
                   allocations=tuple(await sync_store.allocations(snapshot.tenant.name)))
