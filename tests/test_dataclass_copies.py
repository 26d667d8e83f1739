"""The copies made field by field instead of with ``dataclasses.replace`` (for CPU: one per
written object) copy every field: each field is given a value of its own, and after the copy
every field is the original's or the one the copy was asked to change. A field added to one of
these classes and not to its copy fails here instead of being dropped silently."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from daemon.pbx.types import PbxOperation
from daemon.sync.changes import Change, Refs
from state.pushed import Pushed


class Marker:
    """A value no field has by default, told apart by its name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Marker({self.name})"


def marked(cls: type) -> Any:
    """An instance of ``cls`` whose every field holds its own marker."""
    return cls(**{f.name: Marker(f.name) for f in dataclasses.fields(cls)})


def new(name: str) -> Marker:
    return Marker(f"new {name}")


COPIES: dict[str, tuple[type, Callable[[Any], Any], dict[str, Any]]] = {
    "Pushed.written": (Pushed, lambda p: p.written(new("pbx_id"), new("etag"), new("note")),
                       {"pbx_id": "new pbx_id", "etag": "new etag", "note": "new note"}),
    "Pushed.with_payload": (Pushed, lambda p: p.with_payload(new("payload"), new("payload_text"), new("payload_hash"),
                                                             new("input_hash")),
                            {"payload": "new payload", "payload_text": "new payload_text",
                             "payload_hash": "new payload_hash", "input_hash": "new input_hash"}),
    "PbxOperation.with_payload": (PbxOperation, lambda o: o.with_payload(new("payload")), {"payload": "new payload"}),
    "Change.materialized": (Change, lambda c: c.materialized(new("operation"), new("on_success"), new("fingerprint"),
                                                             new("refs")),
                            {"operation": "new operation", "on_success": "new on_success",
                             "fingerprint": "new fingerprint", "refs": "new refs"}),
    "Refs.built": (Refs, lambda r: r.built(), {"payload_source": None}),
}


def wrong_fields(cls: type, original: Any, result: Any, changed: dict[str, Any]) -> list[str]:
    """The fields of ``result`` that are neither the original's nor the change asked for."""
    wrong = []
    for field in dataclasses.fields(cls):
        value = getattr(result, field.name)
        if field.name in changed:
            if (value.name if isinstance(value, Marker) else value) != changed[field.name]:
                wrong.append(field.name)
        elif value is not getattr(original, field.name):
            wrong.append(field.name)
    return wrong


@pytest.mark.parametrize("name", list(COPIES))
def test_a_copy_keeps_every_field_it_is_not_asked_to_change(name: str) -> None:
    cls, copy, changed = COPIES[name]
    original = marked(cls)
    result = copy(original)
    assert type(result) is cls
    assert wrong_fields(cls, original, result, changed) == []


def test_the_check_catches_a_copy_that_drops_a_field() -> None:
    """A copy that leaves out a field (here ``note``, left at its default) is caught."""
    original = marked(Pushed)
    dropped = Pushed(original.kind, original.graph_id, original.pbx_id, original.payload, original.payload_hash,
                     original.etag, original.active, original.out_of_scope_since, original.photo_etag,
                     original.extension, original.input_hash, payload_text=original.payload_text)
    assert wrong_fields(Pushed, original, dropped, {}) == ["note"]
