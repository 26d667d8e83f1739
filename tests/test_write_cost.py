"""What a first run's writes cost the daemon, and when it makes them: each
new user's change is built once from its stored copy (payload, hash, stored
text and quarantine fingerprint agree with what the planner would have made),
each ``/Bulk`` body is joined from the bytes its entries were sized by, and a
chunk is built only once the chunk before it is on its way to the PBX."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from daemon.errors import PbxUnavailable
from daemon.pbx.bulk import bulk_body, bulk_requests
from daemon.pbx.connection import encoded_body
from daemon.pbx.mapping import payload_hash
from daemon.pbx.types import PbxOperation, PbxOutcome, ProviderConfig
from daemon.sync.apply import Applier
from daemon.sync.changes import Plan
from daemon.sync.materialize import build_deferred
from daemon.sync.plan_users import PlanInputs, UserPlanner
from daemon.sync.report import RunReport
from state.copies import GraphCopy
from state.pushed import Pushed
from state.sync_store import SyncStore
from sync_fixtures import tenant_config


def user(index: int) -> dict[str, Any]:
    return {"id": f"user-{index}", "userPrincipalName": f"zoë.{index}@contoso.example", "displayName": f"Zoë {index}",
            "givenName": "Zoë", "surname": f"Ångström {index}", "accountEnabled": True, "userType": "Member",
            "mail": f"zoe.{index}@contoso.example", "jobTitle": "李小龍" if index % 2 else None}


def planned_creates(tmp_path: Path, count: int, **settings: Any) -> tuple[UserPlanner, list[Any], dict[str, GraphCopy]]:
    planner = UserPlanner(PlanInputs(tenant=tenant_config(tmp_path, **settings), now=1000.0))
    copies = {}
    for index in range(count):
        data = user(index)
        copies[data["id"]] = GraphCopy(data["id"], data, None, json.dumps(data))
        planner.add(copies[data["id"]], None)
    return planner, planner.finish().changes, copies


def test_a_new_user_is_built_once_with_what_the_planner_would_have_made(tmp_path: Path) -> None:
    planner, changes, copies = planned_creates(tmp_path, 3)
    assert all(c.refs.payload_source is planner and c.fingerprint == "" for c in changes)  # made per chunk
    built = build_deferred(changes, copies)
    assert len(built) == 3
    for planned, change in zip(changes, built, strict=True):
        copy = copies[change.graph_id]
        payload, inputs = planner.build_create(copy, str(planned.extension))
        assert change.operation.payload == payload and change.operation.action == "create"
        assert change.operation.maybe_applied == planned.operation.maybe_applied
        assert change.fingerprint == planner.fingerprint(copy) != ""
        assert change.refs.payload_source is None and change.refs.photo == planned.refs.photo
        assert (change.kind, change.action, change.phase, change.label, change.reason, change.extension) == \
            (planned.kind, planned.action, planned.phase, planned.label, planned.reason, planned.extension)
        pushed = change.on_success
        assert isinstance(pushed, Pushed) and isinstance(planned.on_success, Pushed)
        assert pushed.payload == payload and pushed.payload_hash == payload_hash(payload)
        assert pushed.input_hash == inputs and pushed.extension == planned.on_success.extension
        assert pushed.payload_text is not None and json.loads(pushed.payload_text) == payload  # what is stored


class Unbuildable:
    """A payload source whose payloads cannot be built (its fingerprints can)."""

    def __init__(self, planner: UserPlanner) -> None:
        self.planner = planner

    def build_create(self, copy: GraphCopy, number: str) -> tuple[dict[str, Any], str | None]:
        raise ValueError("no payload for this one")

    def fingerprint(self, copy: GraphCopy) -> str:
        return self.planner.fingerprint(copy)


def test_a_create_that_cannot_be_built_fails_alone_with_its_fingerprint(tmp_path: Path) -> None:
    planner, changes, copies = planned_creates(tmp_path, 2)
    changes[1] = replace(changes[1], refs=replace(changes[1].refs, payload_source=Unbuildable(planner)))
    failed: list[tuple[Any, Exception]] = []
    built = build_deferred(changes, copies, failed)
    assert [c.graph_id for c in built] == [changes[0].graph_id]
    broken = changes[1].graph_id
    assert [(c.graph_id, c.fingerprint) for c, _ in failed] == [(broken, planner.fingerprint(copies[broken]))]
    assert planner.fingerprint(copies[broken]) != ""


def test_each_bulk_body_is_the_encoding_of_its_operations() -> None:
    config = ProviderConfig(bulk=True, bulk_max_operations=70, bulk_max_payload_size=4000, etag=True)
    names = itertools.cycle(["Zoë Ångström", "Иван Петров", "李小龍", "Plain Name", "x" * 300])
    operations = [PbxOperation("create", "User", f"id-{i}", payload={"userName": f"u{i}@x.example",
                                                                   "displayName": next(names)}) for i in range(200)]
    operations += [PbxOperation("update", "User", f"up-{i}", operations=[{"op": "replace", "path": "title",
                                                                          "value": "Ünïcode " * (i % 9)}],
                                pbx_id=f"pbx-{i}", etag=f'W/"{i}"') for i in range(100)]
    operations += [PbxOperation("delete", "User", f"d-{i}", pbx_id=f"p{i}") for i in range(100)]
    requests = bulk_requests(operations, config)
    assert len(requests) > 3 and [op for r in requests for op in r.operations] == operations
    for request in requests:
        assert request.body == encoded_body(bulk_body(request.operations, config.etag))
        assert len(request.body) <= 4000 and len(request.operations) <= 70


# --- a chunk is built once the one before it is on its way ---


class RecordingStore:
    """The applier's state calls, in the order they were made (no database)."""

    def __init__(self, copies: dict[str, GraphCopy], events: list[str]) -> None:
        self.copies, self.events = copies, events
        self.journaled: list[str] = []

    async def apply_bookkeeping(self, tenant: str, entries: Sequence[Any], history: Sequence[Any] = ()) -> list[str]:
        return []

    async def prune_history(self) -> int:
        return 0

    async def graph_copies(self, tenant: str, kind: str, ids: Sequence[str]) -> dict[str, GraphCopy]:
        self.events.append(f"build {ids[0]}")
        await asyncio.sleep(0)
        return {i: self.copies[i] for i in ids if i in self.copies}

    async def journal_creates(self, tenant: str, creates: Sequence[Any]) -> None:
        self.journaled += [graph_id for _, graph_id, _ in creates]
        await asyncio.sleep(0)


class HeldWriter:
    """A PBX that answers only when told to: every request is held until ``answer`` is set."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.answer = asyncio.Event()

    async def operations_per_request(self) -> int:
        return 2

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        self.events.append(f"send {operations[0].external_id}")
        await self.answer.wait()
        for operation in operations:
            yield PbxOutcome(operation, f"pbx-{operation.external_id}")


async def test_the_next_chunk_is_built_after_the_one_before_is_sent(tmp_path: Path) -> None:
    _, changes, copies = planned_creates(tmp_path, 6)
    events: list[str] = []
    writer = HeldWriter(events)
    store = RecordingStore(copies, events)
    report = RunReport()
    applying = asyncio.ensure_future(Applier("t", cast(SyncStore, store), cast(Any, writer), report, chunk_size=2).apply(
        Plan(changes=changes)))
    for _ in range(50):
        await asyncio.sleep(0)
    ids = [c.graph_id for c in changes]
    # two requests in flight, each chunk built only after the one before went out, and the third
    # built and journaled while both wait, but not sent before one of them is answered
    assert events == [f"build {ids[0]}", f"send {ids[0]}", f"build {ids[2]}", f"send {ids[2]}", f"build {ids[4]}"]
    assert store.journaled == ids
    writer.answer.set()
    await applying
    assert events[5:] == [f"send {ids[4]}"]
    assert report.counts == {"create": 6} and not report.failures


class FailingFirstWriter(HeldWriter):
    """Held like :class:`HeldWriter`; its first request then fails as an unreachable PBX does."""

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        first = not any(event.startswith("send") for event in self.events)
        async for outcome in super().execute_many(operations):
            if first:
                raise PbxUnavailable("PBX unreachable")
            yield outcome


async def test_a_chunk_built_ahead_is_not_sent_after_a_chunk_before_it_failed(tmp_path: Path) -> None:
    _, changes, copies = planned_creates(tmp_path, 6)
    events: list[str] = []
    writer = FailingFirstWriter(events)
    store = RecordingStore(copies, events)
    applying = asyncio.ensure_future(Applier("t", cast(SyncStore, store), cast(Any, writer), RunReport(),
                                             chunk_size=2).apply(Plan(changes=changes)))
    for _ in range(50):
        await asyncio.sleep(0)
    ids = [c.graph_id for c in changes]
    assert events[-1] == f"build {ids[4]}" and store.journaled == ids  # built ahead, waiting for a slot
    writer.answer.set()
    with pytest.raises(PbxUnavailable):
        await applying
    assert [e for e in events if e.startswith("send")] == [f"send {ids[0]}", f"send {ids[2]}"]
