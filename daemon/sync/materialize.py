"""Resolving a chunk's typed references (:class:`~daemon.sync.changes.Refs`)
into the writes that are sent: pure functions, given what the applier looked
up for the chunk (stored copies, PBX ids of users created earlier in the
run, photo bytes). The applier calls them in this order, once per chunk.

Every resolved change keeps its bookkeeping in step: what is recorded as
pushed is the payload that was sent, except a photo, which the stored payload
keeps as its version (``plan_users.PHOTO_VERSION``) instead of its bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from daemon.pbx.mapping import PatchOperation, Payload, canonical_text, text_hash
from daemon.sync.changes import Change
from state.copies import GraphCopy
from state.pushed import Pushed


def build_deferred(chunk: list[Change], copies: Mapping[str, GraphCopy],
                   failed: list[tuple[Change, Exception]] | None = None) -> list[Change]:
    """The chunk with each deferred create's payload built from its stored copy.

    A copy gone since planning (purged by a concurrent disconnect) drops its
    create; the next run plans it again if it is still wanted. With ``failed``,
    a create whose payload cannot be built is left out and listed there (it
    alone fails); without it, the error is raised."""
    out = []
    for change in chunk:
        source = change.refs.payload_source
        if source is None:
            out.append(change)
            continue
        copy = copies.get(change.graph_id)
        if copy is None or change.extension is None:
            continue
        fingerprint = source.fingerprint(copy)
        try:
            payload, inputs = source.build_create(copy, change.extension)
            built = _built_create(change, payload, inputs, fingerprint)
        except Exception as error:  # one create's failure: the rest of the chunk goes on
            if failed is None:
                raise
            failed.append((replace(change, fingerprint=fingerprint), error))
            continue
        out.append(built)
    return out


def _built_create(change: Change, payload: Payload, inputs: str | None, fingerprint: str) -> Change:
    """A deferred create with its payload, the payload serialised once for its hash and its stored copy."""
    on_success = change.on_success
    if isinstance(on_success, Pushed):
        text = canonical_text(payload)
        on_success = on_success.with_payload(payload, text, text_hash(text), inputs)
    return change.materialized(change.operation.with_payload(payload), on_success, fingerprint, change.refs.built())


def resolve_users(change: Change, pbx_ids: Mapping[str, str]) -> Change | None:
    """``change`` with the PBX ids of users created earlier in the run filled in.

    A group member whose user was not created is left out (the next run adds
    it); a contact whose owner was not created waits for the next run (None)."""
    refs = change.refs
    if not refs.pending_users:
        return change
    operation = change.operation
    payload = dict(operation.payload) if operation.payload is not None else None
    operations = list(operation.operations)
    if refs.owner is not None:
        owner = pbx_ids.get(refs.owner.graph_id)
        if owner is None:
            return None
        if payload is not None:
            payload["owner"] = owner
        operations = _set_owner(operations, owner) if operation.action == "update" else operations
    members = sorted(pbx_ids[m.graph_id] for m in refs.members if m.graph_id in pbx_ids)
    if members:
        if payload is not None:
            known = [m["value"] for m in payload.get("members", [])]
            payload["members"] = [{"value": m} for m in sorted(set(known) | set(members))]
        if operation.action == "update":
            operations = _add_members(operations, members)
    on_success = change.on_success
    if isinstance(on_success, Pushed) and payload is not None:
        text = canonical_text(payload)
        on_success = replace(on_success, payload=payload, payload_hash=text_hash(text), payload_text=text)
    return replace(change, operation=replace(operation, payload=payload, operations=operations),
                   on_success=on_success, refs=replace(refs, members=(), owner=None))


def _set_owner(operations: list[PatchOperation], owner: str) -> list[PatchOperation]:
    """The planner left the owner out (it was not known): set it, whatever the diff said of it."""
    had_owner = any(op.get("path") == "owner" and op.get("op") == "remove" for op in operations)
    kept = [op for op in operations if op.get("path") != "owner"]
    return kept + [{"op": "replace" if had_owner else "add", "path": "owner", "value": owner}]


def _add_members(operations: list[PatchOperation], members: list[str]) -> list[PatchOperation]:
    """The members' ``add`` operation with the new users in it (made if there was none)."""
    out: list[PatchOperation] = []
    added = False
    for op in operations:
        if op.get("op") == "add" and op.get("path") == "members" and not added:
            known = [m["value"] for m in op.get("value", [])]
            op = {**op, "value": [{"value": m} for m in sorted(set(known) | set(members))]}
            added = True
        out.append(op)
    if not added:
        out.append({"op": "add", "path": "members", "value": [{"value": m} for m in members]})
    return out


def with_photo(change: Change, uri: str | None) -> Change:
    """The write as sent: the photo's bytes as a ``data:`` URI (or, without them, no photo)."""
    if change.refs.photo is None:
        return change
    operation = change.operation
    payload: dict[str, Any] | None = dict(operation.payload) if operation.payload is not None else None
    if payload is not None and "photos" in payload:
        if uri:
            payload["photos"] = [{"value": uri, "type": "photo"}]
        else:
            payload.pop("photos")
    operations = []
    for op in operation.operations:
        if op.get("path") == "photos" and "value" in op:
            op = {"op": "remove", "path": "photos"} if uri is None else {**op, "value": [{"value": uri, "type": "photo"}]}
        operations.append(op)
    return replace(change, operation=replace(operation, payload=payload, operations=operations),
                   refs=replace(change.refs, photo=None))
