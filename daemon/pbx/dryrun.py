"""A PBX writer that records instead of writing.

It has the same interface as :class:`~daemon.pbx.client.PbxClient`'s writes,
answers every create with a virtual id (``dry-run:User:1``) so later
operations of the same run can refer to objects it would have created, and
sends nothing at all.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence

from daemon.pbx.client import PbxOperation, PbxOutcome

VIRTUAL_PREFIX = "dry-run:"


class DryRunPbxClient:
    def __init__(self) -> None:
        self.described: list[str] = []  # lines, not operations: a dry run of 100k creates holds no payloads
        self._numbers = itertools.count(1)

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        self.described.append(operation.describe())
        pbx_id = operation.pbx_id
        if operation.action == "create":
            pbx_id = f"{VIRTUAL_PREFIX}{operation.kind}:{next(self._numbers)}"
        return PbxOutcome(operation, pbx_id)

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        for operation in operations:
            yield await self.execute(operation)

    async def operations_per_request(self) -> int:
        return 1  # it sends nothing: the applier's own chunk size

    def plan(self) -> list[str]:
        """What would have been sent, one line per operation."""
        return list(self.described)
