"""The SCIM client against a real scim2-server loaded with contrib/scim/."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import REPO
from daemon.clock import FakeClock
from daemon.errors import PbxConflict, PbxRequestFailed, PbxUnavailable
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient, PbxOperation, ProviderConfig
from daemon.pbx.dryrun import DryRunPbxClient
from daemon.pbx.mapping import contact_payload, group_payload, patch_operations, user_payload
from daemon.pbx.schema import ENTERPRISE_USER, PBX_GROUP, PBX_USER
from daemon.retry import Transport
from pbx_fixtures import PbxEnv, make_client
from sim.pbx import ScimServer

GRAPH_USER = {
    "id": "11111111-0000-4000-8000-000000000001",
    "userPrincipalName": "adele.vance@contoso.example",
    "displayName": "Adele Vance",
    "givenName": "Adele",
    "surname": "Vance",
    "jobTitle": "Retail Manager",
    "mail": "adele.vance@contoso.example",
    "businessPhones": ["+1 425 555 0109 ext. 123"],
    "mobilePhone": "+1 425 555 0110",
    "department": "Retail",
}


def user_op(graph: dict[str, Any], number: str = "1001", **overrides: Any) -> PbxOperation:
    payload = user_payload(graph, extension_number=number, active=True, sign_in_as_administrator=False,
                           sign_in_as_standard_user=True, photo=overrides.pop("photo", None))
    return PbxOperation("create", "User", graph["id"], payload=payload | overrides)


def graph_user(index: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"11111111-0000-4000-8000-{index:012d}", "userPrincipalName": f"user{index}@contoso.example",
            "displayName": f"User {index}", **fields}


async def test_user_round_trips_every_contract_attribute(pbx: PbxEnv) -> None:
    photo = "data:image/jpeg;base64,/9j/4AAQ"
    outcome = await pbx.client.execute(user_op(GRAPH_USER, photo=photo))
    assert outcome.ok and outcome.pbx_id
    stored = await pbx.client.get("User", outcome.pbx_id)
    assert stored is not None and stored.external_id == GRAPH_USER["id"]
    data = stored.data
    assert data["userName"] == "adele.vance@contoso.example"
    assert data["displayName"] == "Adele Vance"
    assert data["name"] == {"givenName": "Adele", "familyName": "Vance"}
    assert data["title"] == "Retail Manager"
    assert data["emails"] == [{"value": "adele.vance@contoso.example", "type": "work", "primary": True}]
    assert data["phoneNumbers"] == [{"value": "+1 425 555 0109 ext. 123", "type": "work"}, {"value": "+1 425 555 0110", "type": "mobile"}]
    assert data["active"] is True
    assert data["photos"] == [{"value": photo, "type": "photo"}]
    assert data[ENTERPRISE_USER] == {"department": "Retail"}
    assert data[PBX_USER] == {"extensionNumber": "1001", "signInAsAdministrator": False, "signInAsStandardUser": True}
    busy = [{"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T09:00:00Z", "showAs": "busy"}]
    patch = PbxOperation("update", "User", GRAPH_USER["id"], pbx_id=outcome.pbx_id, etag=stored.etag,
                         operations=[{"op": "add", "path": f"{PBX_USER}:busy", "value": busy}])
    assert (await pbx.client.execute(patch)).ok
    after = await pbx.client.get("User", outcome.pbx_id)
    assert after is not None
    assert [(b["showAs"], b["start"][:16]) for b in after.data[PBX_USER]["busy"]] == [("busy", "2026-12-01T08:00")]


async def test_patch_sends_only_changed_attributes_and_delete_removes(pbx: PbxEnv) -> None:
    created = await pbx.client.execute(user_op(GRAPH_USER))
    assert created.pbx_id
    old = user_op(GRAPH_USER).payload
    renamed = dict(GRAPH_USER, displayName="Adele V.", jobTitle=None, mobilePhone=None)
    new = user_payload(renamed, extension_number="1001", active=False, sign_in_as_administrator=True, sign_in_as_standard_user=True)
    assert old is not None
    operations = patch_operations(old, new)
    assert operations == [
        {"op": "replace", "path": "active", "value": False},
        {"op": "replace", "path": "displayName", "value": "Adele V."},
        {"op": "replace", "path": "phoneNumbers", "value": [{"value": "+1 425 555 0109 ext. 123", "type": "work"}]},
        {"op": "remove", "path": "title"},
        {"op": "replace", "path": f"{PBX_USER}:signInAsAdministrator", "value": True},
    ]
    outcome = await pbx.client.execute(PbxOperation("update", "User", GRAPH_USER["id"], payload=new, operations=operations, pbx_id=created.pbx_id, etag=created.etag))
    assert outcome.ok
    stored = await pbx.client.get("User", created.pbx_id)
    assert stored is not None
    assert {k: v for k, v in stored.data.items() if k not in ("id", "meta")} == new
    assert (await pbx.client.execute(PbxOperation("delete", "User", GRAPH_USER["id"], pbx_id=created.pbx_id))).ok
    assert await pbx.client.get("User", created.pbx_id) is None


async def test_group_and_contact_round_trip(pbx: PbxEnv) -> None:
    member = await pbx.client.execute(user_op(GRAPH_USER))
    assert member.pbx_id
    group = group_payload({"id": "g-1", "displayName": "Support Line", "mail": "support@contoso.example"}, extension_number="2001", member_ids=[member.pbx_id])
    created = await pbx.client.execute(PbxOperation("create", "Group", "g-1", payload=group))
    assert created.ok and created.pbx_id
    stored = await pbx.client.get("Group", created.pbx_id)
    assert stored is not None
    assert stored.data["displayName"] == "Support Line"
    assert [m["value"] for m in stored.data["members"]] == [member.pbx_id]
    assert stored.data[PBX_GROUP] == {"extensionNumber": "2001", "email": "support@contoso.example"}
    contact = contact_payload(
        {"id": "c-1", "displayName": "Ünal O'Neil", "givenName": "Ünal", "surname": "O'Neil", "companyName": "Fabrikam",
         "jobTitle": "Buyer", "businessPhones": ["+49 30 1234 5678-12"], "homePhones": ["+49 30 555"], "mobilePhone": "+49 170 1",
         "emailAddresses": [{"name": "Ünal", "address": "unal@fabrikam.example"}]},
        directory="personal", source=GRAPH_USER["userPrincipalName"], owner=member.pbx_id,
    )
    made = await pbx.client.execute(PbxOperation("create", "Contact", "c-1", payload=contact))
    assert made.ok and made.pbx_id
    stored_contact = await pbx.client.get("Contact", made.pbx_id)
    assert stored_contact is not None
    assert {k: v for k, v in stored_contact.data.items() if k not in ("id", "meta")} == contact
    assert stored_contact.data["phoneNumbers"][0] == {"value": "+49 30 1234 5678-12", "type": "work"}


async def test_hostile_names_match_exactly_one_object(pbx: PbxEnv) -> None:
    hostile = 'O\'Brien "Bob" \\ or userName pr ünïcødé'
    await pbx.client.execute(user_op(graph_user(1, displayName=hostile, userPrincipalName='o"brien\\x@contoso.example')))
    await pbx.client.execute(user_op(graph_user(2, displayName="O'Brien", userPrincipalName="obrien@contoso.example"), number="1002"))
    await pbx.client.execute(user_op(graph_user(3, displayName='O\'Brien "Bob"', userPrincipalName="bob@contoso.example"), number="1003"))
    by_name = await pbx.client.find("User", "displayName", hostile)
    assert [o.external_id for o in by_name] == [graph_user(1)["id"]]
    by_user_name = await pbx.client.find("User", "userName", 'o"brien\\x@contoso.example')
    assert [o.external_id for o in by_user_name] == [graph_user(1)["id"]]
    assert await pbx.client.find("User", "displayName", 'x" or displayName pr or "') == []


async def test_409_adopts_an_unclaimed_object(pbx: PbxEnv) -> None:
    manual = user_op(GRAPH_USER).payload
    assert manual is not None
    manual = {k: v for k, v in manual.items() if k != "externalId"} | {"title": "Set by hand"}
    pre = await pbx.client.execute(PbxOperation("create", "User", "manual", payload=manual))
    assert pre.ok
    outcome = await pbx.client.execute(user_op(GRAPH_USER))
    assert outcome.ok and outcome.adopted and outcome.pbx_id == pre.pbx_id
    stored = await pbx.client.find_by_external_id("User", GRAPH_USER["id"])
    assert stored is not None and stored.id == pre.pbx_id
    assert stored.data["title"] == "Retail Manager"


async def test_409_refuses_an_object_of_another_directory_entry(pbx: PbxEnv) -> None:
    other = user_op(dict(GRAPH_USER, id="99999999-0000-4000-8000-000000000009"), number="1009")
    assert (await pbx.client.execute(other)).ok
    outcome = await pbx.client.execute(user_op(GRAPH_USER))
    assert isinstance(outcome.error, PbxConflict)
    assert "linked to another directory object" in str(outcome.error)
    untouched = await pbx.client.find_by_external_id("User", "99999999-0000-4000-8000-000000000009")
    assert untouched is not None and untouched.data[PBX_USER]["extensionNumber"] == "1009"


async def test_duplicate_extension_number_is_a_conflict_naming_the_number(pbx: PbxEnv) -> None:
    assert (await pbx.client.execute(user_op(graph_user(1), number="1500"))).ok
    outcome = await pbx.client.execute(user_op(graph_user(2), number="1500"))
    assert isinstance(outcome.error, PbxConflict)
    assert "extension 1500 is already used" in str(outcome.error)
    assert outcome.error.status == 409


async def test_412_rereads_and_retries_once(pbx: PbxEnv) -> None:
    created = await pbx.client.execute(user_op(GRAPH_USER))
    assert created.pbx_id and created.etag
    someone_else = PbxOperation("update", "User", GRAPH_USER["id"], pbx_id=created.pbx_id, operations=[{"op": "replace", "path": "title", "value": "Changed elsewhere"}])
    assert (await pbx.client.execute(someone_else)).ok
    stale = PbxOperation("update", "User", GRAPH_USER["id"], pbx_id=created.pbx_id, etag=created.etag, operations=[{"op": "replace", "path": "displayName", "value": "Fresh"}])
    outcome = await pbx.client.execute(stale)
    assert outcome.ok
    statuses = [r.status for r in pbx.wait_for_requests(7) if r.method == "PATCH"]
    assert sorted(statuses) == [204, 204, 412]  # the server's log lines may come in any order
    stored = await pbx.client.get("User", created.pbx_id)
    assert stored is not None and stored.data["displayName"] == "Fresh"


async def test_404_on_patch_recreates_and_on_delete_is_done(pbx: PbxEnv) -> None:
    payload = user_op(GRAPH_USER).payload
    lost = PbxOperation("update", "User", GRAPH_USER["id"], pbx_id="gone-id", payload=payload, operations=[{"op": "replace", "path": "title", "value": "x"}])
    outcome = await pbx.client.execute(lost)
    assert outcome.ok and outcome.recreated and outcome.pbx_id != "gone-id"
    assert await pbx.client.find_by_external_id("User", GRAPH_USER["id"]) is not None
    assert (await pbx.client.execute(PbxOperation("delete", "User", "x", pbx_id="never-existed"))).ok


async def test_other_4xx_is_a_per_object_failure_with_the_servers_detail(pbx: PbxEnv) -> None:
    bad = PbxOperation("create", "User", "bad", payload={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "externalId": "bad"})
    outcome = await pbx.client.execute(bad)
    assert isinstance(outcome.error, PbxRequestFailed)
    assert outcome.error.status == 400 and outcome.error.detail
    assert (await pbx.client.execute(user_op(GRAPH_USER))).ok  # the next object is unaffected


async def test_metrics_count_requests_by_op_and_status(pbx: PbxEnv) -> None:
    await pbx.client.execute(user_op(GRAPH_USER))
    text = pbx.metrics.render().decode()
    assert 'm365sync_pbx_requests_total{op="create",status="201",tenant="t"} 1.0' in text
    assert 'm365sync_pbx_request_duration_seconds_count{op="create",tenant="t"} 1.0' in text


async def test_inventory_lists_every_object_across_pages(pbx: PbxEnv) -> None:
    for index in range(1, 451):
        assert (await pbx.client.execute(user_op(graph_user(index), number=str(3000 + index)))).ok
    announced = (await pbx.client.discover()).filter_max_results
    pbx.client.config = replace(pbx.client.config or ProviderConfig(), filter_max_results=200)  # a smaller PBX
    numbers = [o.data[PBX_USER]["extensionNumber"] async for o in pbx.client.iter_objects("User", [f"{PBX_USER}:extensionNumber"])]
    assert sorted(numbers) == [str(3000 + i) for i in range(1, 451)]
    logged = pbx.wait_for_requests(450 + 1 + 3)  # creates, discovery, 3 pages of 200
    lists = [r for r in logged if r.method == "GET" and "/Users?" in r.path]
    assert len(lists) == 3 and all("count=200" in r.path for r in lists)
    pbx.client.config = replace(pbx.client.config, filter_max_results=announced)  # pages as large as announced
    assert len([o async for o in pbx.client.iter_objects("User")]) == 450
    lists = [r for r in pbx.wait_for_requests(len(logged) + 1) if r.method == "GET" and "/Users?" in r.path]
    assert len(lists) == 4 and f"count={min(announced, 1000)}" in lists[-1].path


async def test_bulk_is_used_when_announced(pbx: PbxEnv) -> None:
    operations = [user_op(graph_user(i), number=str(4000 + i)) for i in range(1, 31)]
    outcomes = [o async for o in pbx.client.execute_many(operations)]
    assert all(o.ok and o.pbx_id for o in outcomes)
    requests = pbx.wait_for_requests(2)
    assert [r.method + " " + r.path.split("/v2")[1] for r in requests] == ["GET /ServiceProviderConfig", "POST /Bulk"]
    found = await pbx.client.find_by_external_id("User", graph_user(17)["id"])
    assert found is not None and found.id == outcomes[16].pbx_id


async def test_bulk_splits_payloads_above_max_payload_size() -> None:
    config = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": True}, "filter": {"supported": True, "maxResults": 100},
        "etag": {"supported": True}, "changePassword": {"supported": False}, "sort": {"supported": False},
        "bulk": {"supported": True, "maxOperations": 7, "maxPayloadSize": 6000},
    }
    with ScimServer(service_provider_config=config) as server:
        async with aiohttp.ClientSession() as session:
            client = make_client(server, "bulk", session, Metrics(), FakeClock())
            photo = "data:image/jpeg;base64," + "A" * 1500  # about 1.6 kB per operation
            operations = [user_op(graph_user(i), number=str(5000 + i), photo=photo) for i in range(1, 21)]
            outcomes = [o async for o in client.execute_many(operations)]
            assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if o.error]
            stored = [o async for o in client.iter_objects("User")]
            assert len(stored) == 20
        bulk_posts = [r for r in server.requests("bulk") if r.path.endswith("/Bulk")]
        assert len(bulk_posts) >= 6  # 20 operations of ~1.6 kB under a 6 kB limit: at most 3 per request
        assert all(r.status == 200 for r in bulk_posts)


class FaultProxy:
    """Forwards to scim2-server, answering the first requests with scripted faults."""

    def __init__(self, target: str, faults: list[tuple[int, dict[str, str]]]) -> None:
        self.target = target
        self.faults = faults
        self.seen: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        if self.faults:
            status, headers = self.faults.pop(0)
            self.seen.append(status)
            return web.json_response({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": str(status), "detail": "busy"}, status=status, headers=headers)
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.target + request.path_qs.split("/v2", 1)[1], data=await request.read(), headers={k: v for k, v in request.headers.items() if k.lower() != "content-length"}) as response:
                self.seen.append(response.status)
                return web.Response(status=response.status, body=await response.read(), headers={k: v for k, v in response.headers.items() if k.lower() in ("content-type", "etag")})


@pytest.fixture
async def proxied(scim_server: ScimServer) -> AsyncIterator[tuple[FaultProxy, PbxClient, FakeClock]]:
    proxy = FaultProxy(scim_server.url("proxied"), [])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        client = PbxClient(Transport(session, "t", Metrics(), clock=clock), str(server.make_url("/v2")), scim_server.token)
        yield proxy, client, clock
    await server.close()


async def test_429_and_503_wait_retry_after_then_succeed(proxied: tuple[FaultProxy, PbxClient, FakeClock]) -> None:
    proxy, client, clock = proxied
    proxy.faults = [(429, {"Retry-After": "4"}), (503, {"Retry-After": "2"}), (500, {})]
    outcome = await client.execute(user_op(GRAPH_USER))
    assert outcome.ok
    # 429 was refused before applying: sent again. 503 may have been applied:
    # the user is looked up by externalId (500, then 200: not there) before the POST.
    assert proxy.seen == [429, 503, 500, 200, 201]
    assert clock.sleeps[:2] == [4.0, 2.0] and 0 < clock.sleeps[2] <= 4


async def test_persistent_5xx_is_pbx_unavailable(proxied: tuple[FaultProxy, PbxClient, FakeClock]) -> None:
    proxy, client, _ = proxied
    proxy.faults = [(502, {})] * 10
    with pytest.raises(PbxUnavailable):
        await client.execute(user_op(GRAPH_USER))
    # one POST whose answer is lost, then the look-up that must come before any
    # second POST, retried until the policy gives up: never a blind second POST
    assert len(proxy.seen) == 1 + client.transport.retry.max_attempts


async def test_dry_run_sends_nothing_and_plans_what_a_real_run_does(pbx: PbxEnv) -> None:
    async def run(writer: Any) -> list[str]:
        done: list[str] = []

        async def execute(operation: PbxOperation) -> Any:
            outcome = await writer.execute(operation)
            if outcome.ok:
                done.append(operation.describe())
            return outcome

        """A 100-object change: 60 users, 30 contacts owned by them, 10 updates."""
        user_ids: dict[str, str] = {}
        for index in range(1, 61):
            outcome = await execute(user_op(graph_user(index), number=str(6000 + index)))
            assert outcome.ok, outcome.error
            user_ids[graph_user(index)["id"]] = outcome.pbx_id
        for index in range(1, 31):
            owner_graph_id = graph_user(index)["id"]
            contact = contact_payload({"id": f"c-{index}", "displayName": f"Contact {index}", "mobilePhone": "+1 555"}, directory="personal", source=f"user{index}@contoso.example", owner=user_ids[owner_graph_id])
            outcome = await execute(PbxOperation("create", "Contact", f"c-{index}", payload=contact))
            assert outcome.ok and contact["owner"] == user_ids[owner_graph_id]
        for index in range(1, 11):
            graph_id = graph_user(index)["id"]
            outcome = await execute(PbxOperation("update", "User", graph_id, pbx_id=user_ids[graph_id], operations=[{"op": "replace", "path": "title", "value": "Lead"}]))
            assert outcome.ok
        return done

    dry = DryRunPbxClient()
    planned = await run(dry)
    assert len(planned) == 100
    assert all(o.startswith(("create", "update")) for o in planned)
    assert pbx.requests() == []  # nothing at all reached the PBX
    performed = await run(pbx.client)
    assert performed == planned
    assert len(pbx.wait_for_requests(101)) >= 100


def test_schema_files_declare_every_contract_attribute() -> None:
    schemas = {s["id"]: s for s in json.loads((REPO / "contrib/scim/schemas.json").read_text())}

    def attribute(urn: str, name: str) -> dict[str, Any]:
        return next(a for a in schemas[urn]["attributes"] if a["name"] == name)

    user = "urn:ietf:params:scim:schemas:core:2.0:User"
    for name in ("userName", "displayName", "title", "active", "emails", "phoneNumbers", "photos", "name"):
        assert attribute(user, name)
    assert attribute(ENTERPRISE_USER, "department")["type"] == "string"
    number = attribute(PBX_USER, "extensionNumber")
    assert (number["type"], number["multiValued"], number["uniqueness"], number["mutability"]) == ("string", False, "server", "readWrite")
    assert attribute(PBX_USER, "signInAsAdministrator")["type"] == "boolean"
    assert attribute(PBX_USER, "signInAsStandardUser")["type"] == "boolean"
    busy = attribute(PBX_USER, "busy")
    assert (busy["type"], busy["multiValued"]) == ("complex", True)
    assert {(s["name"], s["type"]) for s in busy["subAttributes"]} == {("start", "dateTime"), ("end", "dateTime"), ("showAs", "string")}
    group_number = attribute(PBX_GROUP, "extensionNumber")
    assert (group_number["type"], group_number["uniqueness"]) == ("string", "server")
    assert attribute(PBX_GROUP, "email")["type"] == "string"
    contact = "urn:velopbx:params:scim:schemas:pbx:2.0:Contact"
    for name in ("directory", "owner", "source", "displayName", "givenName", "familyName", "companyName", "jobTitle"):
        assert attribute(contact, name)["type"] == "string"
    for name in ("phoneNumbers", "emails"):
        assert attribute(contact, name)["multiValued"] is True
    assert attribute(contact, "directory")["canonicalValues"] == ["personal", "company"]


async def test_server_serves_the_schema_files_back_unchanged(pbx: PbxEnv) -> None:
    headers = {"Authorization": f"Bearer {pbx.server.token}"}
    async with aiohttp.ClientSession() as session:
        for endpoint, path in (("/Schemas", "schemas.json"), ("/ResourceTypes", "resource-types.json")):
            async with session.get(pbx.server.url(pbx.tenant) + endpoint, headers=headers) as response:
                assert response.status == 200
                served = (await response.json(content_type=None))["Resources"]
            expected = json.loads((REPO / "contrib/scim" / path).read_text())
            strip = lambda item: {k: v for k, v in item.items() if k not in ("meta", "schemas")}  # noqa: E731
            assert sorted((strip(s) for s in served), key=lambda s: s["id"]) == sorted((strip(s) for s in expected), key=lambda s: s["id"])
