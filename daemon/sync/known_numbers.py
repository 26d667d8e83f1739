"""Numbering new users and groups from what the state knows, without reading
the PBX's whole inventory, so a run with k new objects costs k look-ups.

The state holds every number the daemon handed out (``extension_allocations``:
its users and groups, live or cooling down); each full inventory read also
stores the numbers the PBX holds for anyone else (``FOREIGN_NUMBERS``: set
by hand or by another tool). A new object is looked up by externalId first
(``filter=externalId eq``), so one already on the PBX is adopted with its
number, as the full inventory would have found it; a userName match is
adopted by the create's 409, as before. A number set by hand on the PBX since
the last read is refused by the PBX (``ExtensionTaken``): :class:`TakenNumbers`
notes which creates it refused, and the run reads the inventory once and
numbers them again (see ``daemon.sync.tenant``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field

from daemon.errors import ExtensionTaken
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxOperation, PbxOutcome, PbxWriter
from daemon.sync.numbering import Allocation
from daemon.sync.snapshot import Inventory
from state.sync_store import SyncStore

FOREIGN_NUMBERS = "pbx-foreign-numbers"  # the PBX's numbers not held by their daemon-side owner, at the last read
LOOKUP_LIMIT = 25  # more new objects than this: one paged inventory read costs less than a look-up each


def foreign_numbers(inventory: Inventory, allocations: Collection[Allocation]) -> list[str]:
    """The inventory's numbers whose holder is not the owner the state allocated them to."""
    live = {number: owner for number, _, owner, released_at in allocations if released_at is None}
    return sorted(number for number, holder in inventory.holders.items() if live.get(number) != holder)


async def remember_foreign(sync_store: SyncStore, tenant: str, inventory: Inventory) -> None:
    """Stored after each full read: the numbers a run without one must still avoid."""
    numbers = foreign_numbers(inventory, await sync_store.allocations(tenant))
    await sync_store.set_value(tenant, FOREIGN_NUMBERS, json.dumps(numbers))


async def known_inventory(sync_store: SyncStore, pbx: PbxClient, tenant: str, users: Collection[str],
                          groups: Collection[str]) -> Inventory | None:
    """The part of the inventory a run with these new objects needs: the stored foreign numbers and
    each new object looked up by externalId. None when a full read is needed (never read, or many)."""
    stored = await sync_store.value(tenant, FOREIGN_NUMBERS)
    if stored is None or len(users) + len(groups) > LOOKUP_LIMIT:
        return None
    inventory = Inventory(numbers=set(json.loads(stored)))
    for kind, ids in (("User", sorted(users)), ("Group", sorted(groups))):
        for external_id in ids:
            found = await pbx.find_by_external_id(kind, external_id)  # type: ignore[arg-type]
            if found is not None:
                inventory.add(found)
    return inventory


@dataclass
class TakenNumbers:
    """A writer that notes the creates the PBX refused because their number is held by another object."""

    writer: PbxWriter
    refused: dict[str, set[str]] = field(default_factory=dict)  # "User"/"Group" -> graph ids

    def _note(self, outcome: PbxOutcome) -> PbxOutcome:
        if outcome.operation.action == "create" and isinstance(outcome.error, ExtensionTaken):
            self.refused.setdefault(outcome.operation.kind, set()).add(outcome.operation.external_id)
        return outcome

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        return self._note(await self.writer.execute(operation))

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        async for outcome in self.writer.execute_many(operations):
            yield self._note(outcome)

    async def operations_per_request(self) -> int:
        return await self.writer.operations_per_request()
