"""A PBX writer that asks before each chunk whether it may still write.

With a shared state, a daemon writes a tenant only while it holds the
tenant's lease: the runner wraps its writer in a :class:`GuardedWriter`
whose ``check`` raises :class:`~daemon.errors.LeaseLost` once the lease is
gone, so a run stops before its next chunk instead of writing beside the
daemon that took the tenant over."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from daemon.pbx.types import PbxOperation, PbxOutcome, PbxWriter


class GuardedWriter:
    def __init__(self, writer: PbxWriter, check: Callable[[], Awaitable[None]]) -> None:
        self.writer = writer
        self.check = check

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        await self.check()
        return await self.writer.execute(operation)

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        await self.check()  # once per applied chunk: the applier sends a chunk in one call
        async for outcome in self.writer.execute_many(operations):
            yield outcome
