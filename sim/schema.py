"""Graph's v1.0 schema (reduced CSDL) as the simulator uses it: which
properties a type has, which are collections, so ``$select`` is checked and
unset selected properties come back as ``null`` or ``[]`` like in Graph.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def types() -> dict[str, Any]:
    text = resources.files("sim").joinpath("graph_v1_schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)["types"]
    return loaded


@cache
def properties(type_name: str) -> dict[str, str]:
    """Every structural property of ``microsoft.graph.<type_name>``, inherited ones included."""
    result: dict[str, str] = {}
    name: str | None = f"microsoft.graph.{type_name}"
    while name is not None:
        definition = types()[name]
        for prop, prop_type in definition["properties"].items():
            result.setdefault(prop, prop_type)
        name = definition.get("base")
    return result


def navigation(type_name: str) -> list[str]:
    names: list[str] = types()[f"microsoft.graph.{type_name}"]["navigation"]
    return names


def empty_value(type_name: str, prop: str) -> Any:
    """What Graph returns for a selected property that has no value."""
    return [] if properties(type_name)[prop].startswith("Collection(") else None
