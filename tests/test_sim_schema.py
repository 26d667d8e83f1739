"""Every object the simulator emits uses only Graph v1.0 property names, with
Graph's value shapes, checked against Graph's own (reduced) CSDL schema."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from daemon.graph.delta import DeltaRound
from graph_fixtures import GraphEnv
from sim.generator import generate_tenant

SCHEMA = json.loads((Path(__file__).parent / "graph-v1-schema.json").read_text())["types"]
ALLOWED_ANNOTATIONS = {"@odata.type", "@odata.context", "@odata.mediaEtag", "@odata.mediaContentType", "@removed"}
ISO_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def properties_of(type_name: str) -> dict[str, str]:
    result: dict[str, str] = {}
    name: str | None = type_name
    while name:
        definition = SCHEMA[name]
        result.update({k: v for k, v in definition["properties"].items() if k not in result})
        name = definition.get("base")
    return result


def navigation_of(type_name: str) -> set[str]:
    names: set[str] = set()
    name: str | None = type_name
    while name:
        names.update(SCHEMA[name].get("navigation", []))
        name = SCHEMA[name].get("base")
    return names


def check_value(edm: str, value: Any, where: str, problems: list[str]) -> None:
    if value is None:
        return
    if edm.startswith("Collection("):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list for {edm}, got {value!r}")
            return
        for index, item in enumerate(value):
            check_value(edm[len("Collection(") : -1], item, f"{where}[{index}]", problems)
        return
    if edm == "Edm.String":
        ok = isinstance(value, str)
    elif edm == "Edm.Boolean":
        ok = isinstance(value, bool)
    elif edm == "Edm.Int32":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif edm == "Edm.DateTimeOffset":
        ok = isinstance(value, str) and bool(ISO_INSTANT.fullmatch(value))
    elif edm == "Edm.Guid":
        ok = isinstance(value, str) and _is_uuid(value)
    elif edm in SCHEMA and SCHEMA[edm]["kind"] == "enum":
        ok = value in SCHEMA[edm]["members"]
    elif edm in SCHEMA:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object of {edm}, got {value!r}")
            return
        check_object(edm, value, where, problems)
        return
    else:
        ok = True  # a type the reduced schema leaves out
    if not ok:
        problems.append(f"{where}: {value!r} is not a valid {edm}")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def check_object(type_name: str, obj: dict[str, Any], where: str, problems: list[str]) -> None:
    props = properties_of(type_name)
    navigation = navigation_of(type_name)
    for key, value in obj.items():
        if key in ALLOWED_ANNOTATIONS:
            continue
        if key.endswith("@delta") and key[: -len("@delta")] in navigation:
            continue
        if key not in props:
            problems.append(f"{where}.{key}: not a property of {type_name}")
            continue
        check_value(props[key], value, f"{where}.{key}", problems)


async def all_of(env: GraphEnv, url: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [item async for item in DeltaRound(env.client, url, headers)]


async def test_every_emitted_object_matches_the_v1_schema(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=80, contacts_per_user=3, events_per_user=3, groups=3, photo_fraction=0.5)
    user_props = ",".join(sorted({
        "displayName", "givenName", "surname", "userPrincipalName", "mail", "jobTitle", "department",
        "businessPhones", "mobilePhone", "accountEnabled", "userType", "createdDateTime", "officeLocation",
        "preferredLanguage",
    }))
    objects: list[tuple[str, dict[str, Any]]] = []
    objects += [("microsoft.graph.user", u) for u in await all_of(graph_env, f"/users/delta?$select={user_props}")]
    objects += [("microsoft.graph.user", u) for u in await all_of(graph_env, "/users/delta")]
    objects += [("microsoft.graph.group", g) for g in await all_of(graph_env, "/groups/delta?$select=displayName,mail,members")]
    objects += [("microsoft.graph.group", g) for g in await all_of(graph_env, "/groups/delta")]
    owner = made.members[0]
    graph_env.tenant.add_folder(owner, "folder-1", "Suppliers")
    graph_env.tenant.put_contact(owner, "contact-x", folder_id="folder-1", displayName="Ünal D'Souza", emailAddresses=[{"name": "Ü", "address": "u@example.com"}])
    folders = (await graph_env.client.get(f"/users/{owner}/contactFolders")).body["value"]
    objects += [("microsoft.graph.contactFolder", f) for f in folders]
    for user in made.members[:10]:
        objects += [("microsoft.graph.contact", c) for c in await all_of(graph_env, f"/users/{user}/contactFolders/contacts/contacts/delta")]
        objects += [("microsoft.graph.event", e) for e in await all_of(graph_env, f"/users/{user}/calendarView/delta?startDateTime=2026-11-28T00:00:00Z&endDateTime=2026-12-20T00:00:00Z", {"Prefer": 'outlook.timezone="Europe/Berlin"'})]
        objects.append(("microsoft.graph.mailboxSettings", (await graph_env.client.get(f"/users/{user}/mailboxSettings")).body))
    objects += [("microsoft.graph.contact", c) for c in await all_of(graph_env, f"/users/{owner}/contactFolders/folder-1/contacts/delta")]
    for user in made.with_photo[:5]:
        objects.append(("microsoft.graph.profilePhoto", (await graph_env.client.get(f"/users/{user}/photo")).body))
    kinds = {kind for kind, _ in objects}
    assert kinds == {
        "microsoft.graph.user", "microsoft.graph.group", "microsoft.graph.contactFolder", "microsoft.graph.contact",
        "microsoft.graph.event", "microsoft.graph.mailboxSettings", "microsoft.graph.profilePhoto",
    }
    problems: list[str] = []
    for index, (kind, obj) in enumerate(objects):
        check_object(kind, obj, f"{kind.rsplit('.', 1)[1]}[{index}]", problems)
    assert problems == []
    # Shapes Graph documents: lists where Graph has lists, {dateTime, timeZone}, {name, address}.
    event = next(o for k, o in objects if k == "microsoft.graph.event")
    assert set(event["start"]) == {"dateTime", "timeZone"} and event["start"]["timeZone"] == "Europe/Berlin"
    contact = next(o for k, o in objects if k == "microsoft.graph.contact")
    assert all(set(e) == {"name", "address"} for e in contact["emailAddresses"])
    assert isinstance(contact["businessPhones"], list)


async def test_presence_objects_match_the_v1_schema(graph_env: GraphEnv) -> None:
    made = generate_tenant(graph_env.tenant, users=20, photo_fraction=0)
    graph_env.sim.api.presence.set(made.members[0], "DoNotDisturb", "Presenting")
    answer = await graph_env.client.request("POST", "/communications/getPresencesByUserId", json_body={"ids": made.members})
    items = answer.body["value"]
    problems: list[str] = []
    for index, item in enumerate(items):
        check_object("microsoft.graph.presence", item, f"presence[{index}]", problems)
    assert problems == [] and len(items) == len(made.members)


def test_the_checker_catches_wrong_names_and_shapes() -> None:
    problems: list[str] = []
    check_object("microsoft.graph.user", {"id": "x", "businessPhones": "+1 555", "displayname": "lower", "accountEnabled": "yes"}, "user", problems)
    check_object("microsoft.graph.event", {"id": "e", "start": "2026-12-01T09:00:00"}, "event", problems)
    assert problems == [
        "user.businessPhones: expected a list for Collection(Edm.String), got '+1 555'",
        "user.displayname: not a property of microsoft.graph.user",
        "user.accountEnabled: 'yes' is not a valid Edm.Boolean",
        "event.start: expected an object of microsoft.graph.dateTimeTimeZone, got '2026-12-01T09:00:00'",
    ]
