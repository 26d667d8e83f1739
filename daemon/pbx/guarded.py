"""A PBX writer that asks before each chunk whether it may still write.

With a shared state, a daemon writes a tenant only while it holds the
tenant's lease: the runner wraps its writer in a :class:`GuardedWriter`
whose ``check`` raises :class:`~daemon.errors.LeaseLost` once the lease is
gone, so a run stops before its next chunk instead of writing beside the
daemon that took the tenant over."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from daemon.pbx.types import PbxOperation, PbxOutcome, PbxWriter


class WriteGuard(Protocol):
    async def check(self) -> None:
        """Raise LeaseLost unless the lease is held: from memory, then asking the server.
        Called before each chunk, and (``PbxConnection.may_write``) before each write request."""


class GuardedWriter:
    def __init__(self, writer: PbxWriter, guard: WriteGuard) -> None:
        self.writer = writer
        self.guard = guard

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        await self.guard.check()
        return await self.writer.execute(operation)

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        await self.guard.check()  # once per applied chunk: the applier sends a chunk in one call
        async for outcome in self.writer.execute_many(operations):
            yield outcome
