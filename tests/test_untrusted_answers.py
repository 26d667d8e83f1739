"""Answers the daemon must not trust: the PBX applies each write, then answers
it oddly (a 201 without a usable id, or with an id it never serves; a /Bulk
result without ``location``, a /Bulk answer that is not JSON, or a 400 after
it applied; PATCH and DELETE results without ``bulkId``, as RFC 7644 allows).
Every run still converges: no duplicate, no write sent twice, and the next
run writes nothing."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import scenario
from daemon import status
from daemon.clock import FakeClock
from daemon.errors import PbxListingInconsistent
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.types import PbxOperation
from daemon.retry import Transport
from graph_fixtures import GraphEnv
from pbx_fixtures import PbxEnv
from scim_proxy import Rewrite, RewritingProxy, rewriting_proxy
from sim.pbx import ScimServer
from state.pushed import retry_delay
from sync_fixtures import SyncEnv, sqlite_sync_env
from test_pbx_client import graph_user, user_op
from test_untrusted_input import status_of


@pytest.fixture
async def proxy_env(graph_env: GraphEnv, pbx: PbxEnv, tmp_path: Path, scim_server_one_by_one: ScimServer,
                    request: pytest.FixtureRequest) -> AsyncIterator[tuple[SyncEnv, RewritingProxy]]:
    """The sync engine against scim2-server behind a rewriting proxy; ``bulk`` or ``one-by-one`` (the param)."""
    server = pbx.server if getattr(request, "param", "bulk") == "bulk" else scim_server_one_by_one
    async with rewriting_proxy(server.url(pbx.tenant)) as (proxy, url):
        pbx.client = PbxClient(pbx.client.transport, url, server.token)
        async with sqlite_sync_env(graph_env, pbx, tmp_path, **scenario.config_sections()) as env:
            yield env, proxy


async def converges(env: SyncEnv, world: scenario.Scenario, proxy: RewritingProxy) -> None:
    """Success, exactly the expected objects (each once), no write sent twice, and the next run writes nothing."""
    report = await env.run()
    assert report.result == "success", (report.error, report.failures)
    assert report.failures == [] and report.groups.failures == [] and report.contacts.failures == []
    assert set(await env.pbx_users()) == world.expected_users()
    assert set(await env.pbx_contacts()) == world.expected_contacts()
    assert set(await env.pbx_groups()) == set(world.expected_groups())
    assert proxy.written_twice() == [], "\n".join(proxy.writes)
    writes = len(proxy.writes)
    again = await env.run()
    assert again.result == "success" and len(proxy.writes) == writes, proxy.writes[writes:]


def created(endpoint: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Rewrite:
    """A 201 to a POST of ``endpoint`` answered with ``change(body)``."""
    def rewrite(method: str, path: str, _: Any, status: int, body: Any) -> tuple[int, Any]:
        if method == "POST" and path.endswith(endpoint) and status == 201:
            return status, change(dict(body))
        return status, body
    return rewrite


def bulk(change: Callable[[int, Any], tuple[int, Any]]) -> Rewrite:
    """Every /Bulk answer replaced by ``change(status, body)``."""
    def rewrite(method: str, path: str, _: Any, status: int, body: Any) -> tuple[int, Any]:
        return change(status, body) if path.endswith("/Bulk") else (status, body)
    return rewrite


def without(key: str, methods: tuple[str, ...]) -> Callable[[int, Any], tuple[int, Any]]:
    """Bulk results of ``methods`` without ``key``."""
    def change(status: int, body: Any) -> tuple[int, Any]:
        results = [{k: v for k, v in r.items() if k != key or r["method"] not in methods} for r in body["Operations"]]
        return status, {**body, "Operations": results}
    return change


def no_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "id"}


def foreign_id(body: dict[str, Any]) -> dict[str, Any]:
    return body | {"id": uuid.uuid4().hex}  # meta.location still names the real one


CREATES = [
    pytest.param("one-by-one", created("/Contacts", no_id), id="201-without-id"),
    pytest.param("one-by-one", created("/Contacts", lambda b: b | {"id": ""}), id="201-with-empty-id"),
    pytest.param("one-by-one", created("/Users", foreign_id), id="201-with-an-id-never-served"),
    pytest.param("bulk", bulk(without("location", ("POST",))), id="bulk-without-location"),
    pytest.param("bulk", bulk(lambda s, b: (200, "<html>upstream answered</html>")), id="bulk-not-json"),
    pytest.param("bulk", bulk(lambda s, b: (400, {"status": "400", "detail": "bad"})), id="bulk-400-after-applying"),
]


@pytest.mark.parametrize(("proxy_env", "rewrite"), CREATES, indirect=["proxy_env"])
async def test_an_untrusted_answer_to_creates_leaves_no_duplicate(proxy_env: tuple[SyncEnv, RewritingProxy],
                                                                  rewrite: Rewrite) -> None:
    env, proxy = proxy_env
    world = scenario.build(env.graph.tenant)
    proxy.rewrite = rewrite
    await converges(env, world, proxy)
    assert proxy.rewritten > 0
    rows = await env.db.fetchall("SELECT pbx_id FROM synced_objects WHERE pbx_id IS NOT NULL")
    served = {o.id async for o in env.pbx.client.iter_objects("User")} | \
        {o.id async for o in env.pbx.client.iter_objects("Group")} | \
        {o.id async for o in env.pbx.client.iter_objects("Contact")}
    assert {r[0] for r in rows} <= served  # every recorded id is one the PBX serves


@pytest.mark.parametrize(("proxy_env", "rewrite"), [
    pytest.param("bulk", bulk(without("bulkId", ("PATCH", "DELETE"))), id="patch-and-delete-results-without-bulkId"),
    pytest.param("bulk", bulk(lambda s, b: (400, {"status": "400"})), id="bulk-400-after-applying"),
    pytest.param("bulk", bulk(lambda s, b: (200, "<html>upstream answered</html>")), id="bulk-not-json"),
], indirect=["proxy_env"])
async def test_bulk_updates_and_deletes_are_matched_or_resolved_never_sent_again(
        proxy_env: tuple[SyncEnv, RewritingProxy], rewrite: Rewrite) -> None:
    env, proxy = proxy_env
    world = scenario.build(env.graph.tenant)
    await converges(env, world, proxy)
    scenario.working_day(world)
    proxy.rewrite, before = rewrite, len(proxy.writes)
    await converges(env, world, proxy)
    assert proxy.rewritten > 0
    singles = [w for w in proxy.writes[before:] if w.startswith(("PATCH", "DELETE"))]
    assert Counter(singles).most_common(1)[0][1] == 1  # each PATCH and DELETE reached the PBX once


# --- the client alone ---


@pytest.fixture
async def proxied_client(pbx: PbxEnv) -> AsyncIterator[tuple[RewritingProxy, PbxClient]]:
    async with rewriting_proxy(pbx.server.url(pbx.tenant)) as (proxy, url), aiohttp.ClientSession() as session:
        transport = Transport(session, "t", Metrics(), clock=FakeClock())
        yield proxy, PbxClient(transport, url, pbx.server.token)


async def test_an_id_the_pbx_never_served_is_healed_by_externalid_before_anything_is_created(
        proxied_client: tuple[RewritingProxy, PbxClient], pbx: PbxEnv) -> None:
    """Even a wrong id whose answer agrees with itself (id and location both rewritten) never makes a
    duplicate: the PATCH meets a 404, the object is found by externalId, and a DELETE finds it too."""
    proxy, client = proxied_client
    fake = uuid.uuid4().hex

    def consistent_lie(body: dict[str, Any]) -> dict[str, Any]:
        return body | {"id": fake, "meta": {**body["meta"], "location": f"/Users/{fake}"}}

    proxy.rewrite = created("/Users", consistent_lie)
    first = await client.execute(user_op(graph_user(1)))
    assert first.ok and first.pbx_id == fake  # nothing in the answer could tell
    proxy.rewrite = None
    real = await pbx.client.find_by_external_id("User", graph_user(1)["id"])
    assert real is not None and real.id != fake
    update = PbxOperation("update", "User", graph_user(1)["id"], payload=user_op(graph_user(1)).payload,
                          pbx_id=fake, operations=[{"op": "replace", "path": "title", "value": "Lead"}])
    healed = await client.execute(update)
    assert healed.ok and healed.pbx_id == real.id and not healed.recreated
    assert [o.id async for o in pbx.client.iter_objects("User")] == [real.id]
    gone = await client.execute(PbxOperation("delete", "User", graph_user(1)["id"], pbx_id=fake))
    assert gone.ok and [o async for o in pbx.client.iter_objects("User")] == []
    assert [w for w in proxy.writes if w.startswith("POST")] == [f"POST /Users {graph_user(1)['id']}"]


async def test_a_refused_photo_leaves_the_rest_written(proxied_client: tuple[RewritingProxy, PbxClient],
                                                       pbx: PbxEnv) -> None:
    """A strict PBX refuses a ``data:`` URI in photos.value (a URL reference, RFC 7643 4.1.2)."""
    proxy, client = proxied_client
    proxy.refuse = lambda method, body: method in ("POST", "PATCH") and "data:" in json.dumps(body)
    outcome = await client.execute(user_op(graph_user(1), photo="data:image/jpeg;base64,/9j/4AAQ"))
    assert outcome.ok and outcome.refused_attributes == ("photos",)
    stored = await pbx.client.get("User", outcome.pbx_id or "")
    assert stored is not None and "photos" not in stored.data and stored.data["displayName"] == "User 1"
    photo = [{"op": "replace", "path": "photos", "value": [{"value": "data:image/png;base64,AA", "type": "photo"}]},
             {"op": "replace", "path": "title", "value": "Lead"}]
    update = await client.execute(PbxOperation("update", "User", graph_user(1)["id"], pbx_id=outcome.pbx_id,
                                               operations=photo))
    assert update.ok and update.refused_attributes == ("photos",)
    after = await pbx.client.get("User", outcome.pbx_id or "")
    assert after is not None and after.data["title"] == "Lead"


@pytest.mark.parametrize("fault", ["repeated-page", "short", "moving-total", "repeated-ids"])
async def test_an_inconsistent_listing_fails_rather_than_counting_as_complete(
        proxied_client: tuple[RewritingProxy, PbxClient], fault: str) -> None:
    proxy, client = proxied_client
    for index in range(1, 26):
        assert (await client.execute(user_op(graph_user(index), number=str(7000 + index)))).ok
    client.config = replace(await client.discover(), filter_max_results=10)
    assert len([o.id async for o in client.iter_objects("User")]) == 25  # consistent: complete
    first: list[Any] = []

    def rewrite(method: str, path: str, sent: Any, status: int, body: Any) -> tuple[int, Any]:
        if not (method == "GET" and path.endswith("/Users") and isinstance(body, dict) and "Resources" in body):
            return status, body
        if body["startIndex"] == 1:
            first.append(body)
            return status, body
        if fault == "repeated-page":  # the same startIndex and ids again
            return status, first[0]
        if fault == "repeated-ids":  # the asked startIndex, but ids of the first page
            return status, first[0] | {"startIndex": body["startIndex"]}
        if fault == "short":
            return status, body | {"Resources": []}
        return status, body | {"totalResults": body["totalResults"] + 1}

    proxy.rewrite = rewrite
    with pytest.raises(PbxListingInconsistent):
        [o async for o in client.iter_objects("User")]


async def test_the_etag_a_bulk_result_names_is_the_one_the_next_patch_sends(pbx: PbxEnv) -> None:
    """RFC 7644 3.7: each result's ``version``; stored, the next PATCH passes its If-Match at once."""
    created_ = [o async for o in pbx.client.execute_many([user_op(graph_user(i), number=str(4100 + i)) for i in (1, 2)])]
    updates = [PbxOperation("update", "User", graph_user(i)["id"], pbx_id=o.pbx_id, etag=o.etag,
                            operations=[{"op": "replace", "path": "title", "value": f"T{i}"}])
               for i, o in zip((1, 2), created_, strict=True)]
    patched = [o async for o in pbx.client.execute_many(updates)]
    again = [PbxOperation("update", "User", graph_user(i)["id"], pbx_id=o.pbx_id, etag=o.etag,
                          operations=[{"op": "replace", "path": "title", "value": f"U{i}"}])
             for i, o in zip((1, 2), patched, strict=True)]
    for operation in again:
        assert (await pbx.client.execute(operation)).ok
    statuses = [r.status for r in pbx.server.settled_requests(pbx.tenant) if r.method == "PATCH"]
    assert statuses == [204, 204]  # no 412 first


# --- a conflict the daemon may not resolve ---


@pytest.fixture
async def plain_proxy_env(graph_env: GraphEnv, pbx: PbxEnv, tmp_path: Path, scim_server_one_by_one: ScimServer,
                          request: pytest.FixtureRequest) -> AsyncIterator[tuple[SyncEnv, RewritingProxy]]:
    """Users only, through the proxy; ``bulk`` or ``one-by-one`` (the param)."""
    server = pbx.server if request.param == "bulk" else scim_server_one_by_one
    async with rewriting_proxy(server.url(pbx.tenant)) as (proxy, url):
        pbx.client = PbxClient(pbx.client.transport, url, server.token)
        async with sqlite_sync_env(graph_env, pbx, tmp_path) as env:
            yield env, proxy


@pytest.mark.parametrize("plain_proxy_env", ["bulk", "one-by-one"], indirect=True)
async def test_a_standing_username_conflict_is_recorded_once_and_tried_again_only_when_its_backoff_is_due(
        plain_proxy_env: tuple[SyncEnv, RewritingProxy]) -> None:
    """A PBX user holds the userName, linked to another directory object: not ours to adopt. The
    create is sent once (inside /Bulk too: its 409 result is resolved without a second POST),
    recorded with its reason in ``status --json``, and sent again only when its backoff is due."""
    env, proxy = plain_proxy_env
    clock = env.graph.clock
    taken = user_op({"id": "someone-else", "userPrincipalName": "user1@contoso.example"}, number="7777")
    assert (await env.pbx.client.execute(taken)).ok
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in (1, 2, 3)]
    for index, user_id in enumerate(ids, 1):
        env.graph.tenant.add_user(user_id, displayName=f"User {index}", userPrincipalName=f"user{index}@contoso.example",
                                  accountEnabled=True, userType="Member")
    clash = ids[0]
    posts: list[int] = []

    def count_posts(method: str, path: str, sent: Any, status: int, body: Any) -> tuple[int, Any]:
        operations = sent.get("Operations", []) if path.endswith("/Bulk") and isinstance(sent, dict) else \
            [{"method": method, "data": sent}]
        posts.extend(clock.time() for op in operations if op.get("method") == "POST"
                     and isinstance(op.get("data"), dict) and op["data"].get("externalId") == clash)
        return status, body

    proxy.rewrite = count_posts
    first = await env.run()
    assert first.result == "partial" and first.counts == {"create": 2, "failed": 1}, first.failures
    assert len(posts) == 1
    shown = status.as_json([await status_of(env)])["tenants"][0]
    (failed,) = shown["failed"]
    assert failed["id"] == clash and failed["failures"] == 1 and failed["retry_at"] == clock.time() + retry_delay(1)
    assert "linked to another directory object" in failed["error"] and "someone-else" in failed["error"]
    for _ in range(3):  # every 20 minutes within the hour: not sent again
        clock.advance(20 * 60 - 1)
        assert (await env.run()).counts == {"waiting": 1} and len(posts) == 1
    clock.advance(3)  # the backoff is due
    assert (await env.run()).counts == {"failed": 1} and len(posts) == 2
    (failed,) = status.as_json([await status_of(env)])["tenants"][0]["failed"]
    assert failed["failures"] == 2 and failed["retry_at"] == clock.time() + retry_delay(2)
    clock.advance(retry_delay(2) - 1)
    assert (await env.run()).counts == {"waiting": 1} and len(posts) == 2
    assert set(await env.pbx_users()) == {*ids[1:], "someone-else"}  # theirs left alone


async def test_a_busy_list_sent_to_an_id_the_pbx_never_served_is_written_to_the_object_found_by_externalid(
        pbx: PbxEnv) -> None:
    """A /Bulk ``location`` may name an id the PBX never served; the busy PATCH (no payload to
    recreate from) meets a 404, finds the user by externalId and writes it there."""
    real = await pbx.client.execute(user_op(graph_user(1)))
    assert real.ok and real.pbx_id
    busy = [{"op": "replace", "path": "title", "value": "Busy"}]
    outcome = await pbx.client.execute(PbxOperation("update", "User", graph_user(1)["id"], pbx_id=uuid.uuid4().hex,
                                                    operations=busy))
    assert outcome.ok and outcome.pbx_id == real.pbx_id
    stored = await pbx.client.get("User", real.pbx_id)
    assert stored is not None and stored.data["title"] == "Busy"
    gone = await pbx.client.execute(PbxOperation("update", "User", graph_user(2)["id"], pbx_id=uuid.uuid4().hex,
                                                 operations=busy))
    assert not gone.ok and "no payload was given to recreate it" in str(gone.error)  # nowhere to write it
