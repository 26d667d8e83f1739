"""The one applier: every kind's changes go to the PBX here, and nowhere else.

Phases run in order (creates and updates, memberships, disables, group
deletes, user deletes), each in chunks as large as one request of the PBX
(its ``bulk.maxOperations``; ``WRITE_CHUNK`` changes where it has no
``/Bulk``). Within a phase up to ``REQUESTS_IN_FLIGHT`` chunks are in flight
(``window``), and one more is built and journaled meanwhile, waiting for a
slot: it goes out the moment the PBX answers one, so the PBX does not wait
while the daemon builds the next request (measured in bench/results/bulk.md:
about 0.3 s per answer at 10k users). Each chunk is built only once the one
before is journaled (so the first request waits for one chunk's work, not
two). A phase starts
once every chunk of the one before is answered and recorded, so a group or
contact names the PBX ids of users created earlier in the run, and deletes
come last. Each chunk:

1. the chunk is materialized, its typed references resolved in one step
   (``materialize``): deferred creates get their payloads from the stored
   copies, users created earlier in the run get their PBX ids filled into
   groups and contacts, photos are fetched for this chunk only (and dropped
   after it);
2. its creates (and the numbers they take) are journaled in one transaction,
   so after a crash they are looked up by externalId instead of sent again;
3. the writer sends it (``/Bulk`` where the PBX supports it, never an empty
   PATCH; lost answers are resolved by the PBX client, which asks the lease
   before each write request);
4. its bookkeeping, and each written object's history entry, is recorded in
   one transaction (history older than ``[state] history_days`` is pruned
   once per apply).

A failed object is recorded (and quarantined after repeated failures) and
the run goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

from daemon.errors import reason_of
from daemon.logging import get_logger
from daemon.pbx.connection import WRITES_IN_FLIGHT
from daemon.pbx.types import PbxOutcome, PbxWriter
from daemon.sync.changes import POLLED_ATTRIBUTES, Change, Phase, Plan, failure_text
from daemon.sync.history import current_run_id, history_entry
from daemon.sync.materialize import build_deferred, resolve_users, with_photo
from daemon.window import run_windowed
from state.attributes import BusyPushed
from state.history import HistoryEntry
from state.pushed import Bookkeeping, Failed, Pushed
from state.sync_store import SyncStore

log = get_logger(__name__)

WRITE_CHUNK = 50  # changes per chunk without /Bulk: one bookkeeping transaction each
MAX_CHUNK = 5000  # a PBX announcing more still gets chunks of this many: one chunk's payloads are held at once
REQUESTS_IN_FLIGHT = WRITES_IN_FLIGHT  # chunks sent at once; the PBX client holds its requests to the same bound
CHUNKS_AHEAD = 1  # chunks built and journaled beyond those in flight, each waiting for a slot

Progress = Callable[[str, int, int], None]


class PhotoSource(Protocol):
    async def data_uris(self, user_ids: list[str]) -> dict[str, str]:
        """Each user's photo as a ``data:`` URI; a user left out has none to send."""
        ...


class ReportSink(Protocol):
    def count(self, kind: str, action: str) -> None: ...

    def fail(self, kind: str, text: str) -> None: ...


@dataclass
class Applier:
    tenant: str
    sync_store: SyncStore
    writer: PbxWriter
    report: ReportSink
    progress: Progress | None = None
    photos: PhotoSource | None = None  # without it, writes that carry a photo send none
    chunk_size: int | None = None  # None: as many as one request of the PBX carries (operations_per_request)
    in_flight: int = REQUESTS_IN_FLIGHT
    _user_ids: dict[str, str] | None = field(default=None, init=False, repr=False)  # looked up once per apply
    _slots: asyncio.Semaphore = field(init=False, repr=False)  # a chunk sends only in one of ``in_flight`` slots
    _stopped: bool = field(default=False, init=False, repr=False)  # a chunk failed: no chunk waiting for a slot is sent

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(max(1, self.in_flight))

    async def apply(self, plan: Plan) -> None:
        for kind, text in plan.failures:
            self.report.fail(kind, text)
            log.error("object cannot be synced", kind=kind, problem=text)
        for kind, _ in plan.quarantined:
            self.report.count(kind, "quarantined")
        for kind, _ in plan.waiting:
            self.report.count(kind, "waiting")
        await self.sync_store.apply_bookkeeping(self.tenant, plan.bookkeeping)
        if plan.changes:
            await self.sync_store.prune_history()
        ordered = plan.ordered()
        self._user_ids, self._stopped = None, False
        if not ordered:
            return
        size = self.chunk_size or min(MAX_CHUNK, max(WRITE_CHUNK, await self.writer.operations_per_request()))
        done = [0, len(ordered)]
        for phase in Phase:
            changes = [c for c in ordered if c.phase == phase]
            if self._user_ids is None and any(c.refs.pending_users for c in changes):
                # once per run, after the creates' phase was answered and recorded: every user create is done
                self._user_ids = await self.sync_store.pbx_ids(self.tenant, "user")
            chunks = [changes[start : start + size] for start in range(0, len(changes), size)]
            sending = [asyncio.Event() for _ in chunks]
            await run_windowed([partial(self._chunk, chunk, done, sending[index - 1] if index else None,
                                        sending[index]) for index, chunk in enumerate(chunks)],
                               max(1, self.in_flight) + CHUNKS_AHEAD)

    async def _chunk(self, chunk: list[Change], done: list[int], previous_sending: asyncio.Event | None,
                     sending: asyncio.Event) -> None:
        """One chunk, start to end: materialized, journaled, sent (in a slot), recorded.

        It is materialized once the chunk before it is journaled (``sending``): built earlier, its
        CPU would come before the first request, while the PBX has nothing to do."""
        try:
            if previous_sending is not None:
                await previous_sending.wait()
            if not await self._apply_chunk(await self._materialize(chunk), sending):
                return
        except BaseException:
            self._stopped = True
            raise
        finally:
            sending.set()  # also when it failed: the chunk after it, already started, does not wait forever
        done[0] += len(chunk)
        if self.progress is not None:
            self.progress("apply", done[0], done[1])

    async def _materialize(self, chunk: list[Change]) -> list[Change]:
        """The chunk as it is sent: every typed reference resolved (see ``materialize``)."""
        deferred = [c.graph_id for c in chunk if c.refs.payload_source is not None]
        if deferred:
            failed: list[tuple[Change, Exception]] = []
            chunk = build_deferred(chunk, await self.sync_store.graph_copies(self.tenant, "user", deferred), failed)
            await self._record_failed([(change, failure_text(error)) for change, error in failed])
        if any(c.refs.pending_users for c in chunk):
            user_ids = self._user_ids or {}  # looked up by apply before this phase
            resolved = []
            for change in chunk:
                done = resolve_users(change, user_ids)
                if done is None:
                    log.info("left for the next run: its user was not created", kind=change.kind, object=change.label)
                else:
                    resolved.append(done)
            chunk = resolved
        with_photos = [c.refs.photo.user_id for c in chunk if c.refs.photo is not None]
        if with_photos:
            uris = await self.photos.data_uris(with_photos) if self.photos is not None else {}
            chunk = [with_photo(c, uris.get(c.refs.photo.user_id)) if c.refs.photo is not None else c for c in chunk]
        return chunk

    async def _record_failed(self, failed: list[tuple[Change, str]]) -> None:
        """Objects that failed before they were sent: reported and recorded, each alone."""
        for change, text in failed:
            self.report.fail(change.kind, f"{change.label}: {text}")
            log.error("object cannot be synced", kind=change.kind, object=change.label, problem=text)
        await self.sync_store.apply_bookkeeping(
            self.tenant, [Failed(c.kind, c.graph_id, text, c.fingerprint) for c, text in failed if c.kind not in POLLED_ATTRIBUTES])

    async def _apply_chunk(self, chunk: list[Change], sending: asyncio.Event | None = None) -> bool:
        """Journal, send and record one materialized chunk; False when it was not sent because a
        chunk before it failed while it waited for a slot (its journal entries are then looked up
        by externalId, as after a crash before a send)."""
        await self.sync_store.journal_creates(
            self.tenant, [(c.kind, c.graph_id, c.extension) for c in chunk if c.operation.action == "create"])
        if sending is not None:
            sending.set()  # journaled: the next chunk may be built while this one waits and goes out
        by_operation = {id(c.operation): c for c in chunk}
        entries: list[Bookkeeping] = []
        history: list[HistoryEntry] = []
        failed: dict[str, Change] = {}
        run_id = current_run_id()
        async with self._slots:  # journaled ahead; sent when one of the requests in flight is answered
            if self._stopped:
                return False
            # each outcome counted as it comes: a run stopped mid-chunk reports the writes it applied
            async for outcome in self.writer.execute_many([c.operation for c in chunk]):
                change = by_operation[id(outcome.operation)]
                entry = self._bookkeeping(change, outcome)
                if entry is not None:
                    entries.append(entry)
                if outcome.ok:
                    self.report.count(change.kind, change.action)
                    if change.kind not in POLLED_ATTRIBUTES:  # no object anyone asks the history of
                        history.append(history_entry(change, run_id))
                else:
                    self.report.fail(change.kind, f"{change.label}: {reason_of(outcome.error)}")
                    failed[change.graph_id] = change
        for graph_id in await self.sync_store.apply_bookkeeping(self.tenant, entries, history):
            change = failed[graph_id]
            log.error("object quarantined after repeated failures", kind=change.kind, object=change.label)
        return True

    @staticmethod
    def _bookkeeping(change: Change, outcome: PbxOutcome) -> Bookkeeping | None:
        if not outcome.ok:
            if change.kind in POLLED_ATTRIBUTES:
                return None  # the next poll tries again; nothing to quarantine
            return Failed(change.kind, change.graph_id, reason_of(outcome.error), change.fingerprint)
        entry = change.on_success
        if isinstance(entry, Pushed):
            # A refused photo is remembered as pushed (its version stays in the payload), so the
            # next runs do not send it again until it changes; the note says it is not on the PBX.
            note = f"the PBX refused {', '.join(outcome.refused_attributes)}; the rest was written" \
                if outcome.refused_attributes else None
            return entry.written(outcome.pbx_id or change.operation.pbx_id or entry.pbx_id, outcome.etag, note)
        if isinstance(entry, BusyPushed) and outcome.pbx_id and outcome.pbx_id != change.operation.pbx_id:
            return replace(entry, pbx_id=outcome.pbx_id)  # found under its real id: the next write goes there
        return entry
