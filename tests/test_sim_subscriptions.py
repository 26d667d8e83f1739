"""The simulator's change notifications have the shapes Microsoft documents
(cited in ``sim/subscriptions.py``): a subscription exists only after both
URLs answered the validation handshake; lifetimes have their maxima;
notifications carry the subscription id, its clientState, the change and
the object id; lifecycle events; expiry; the directory limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from daemon.clock import FakeClock
from sim.store import SimTenant
from sim.subscriptions import DIRECTORY_LIMIT, SubscriptionsApi
from sim.world import free_port


@dataclass
class Receiver:
    """A notification endpoint; ``answer`` decides how it answers the handshake."""

    url: str = ""
    answer: str = "echo"  # echo | json | wrong
    received: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        if "validationToken" in request.query:
            token = request.query["validationToken"]
            if self.answer == "json":
                return web.json_response({"token": token})
            return web.Response(text=token if self.answer == "echo" else token[:-1], content_type="text/plain")
        self.received.append(await request.json())
        return web.Response(status=202)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}/hook"
    yield found
    await runner.cleanup()


def _body(graph: SubscriptionsApi, receiver: Receiver, resource: str, minutes: int = 60, **more: Any) -> dict[str, Any]:
    expires = graph.tenant.clock.now() + timedelta(minutes=minutes)
    return {"changeType": "created,updated,deleted", "notificationUrl": receiver.url,
            "lifecycleNotificationUrl": receiver.url, "resource": resource,
            "expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"), "clientState": "s3cret", **more}


def _api() -> SubscriptionsApi:
    tenant = SimTenant(FakeClock())
    tenant.add_user("u1", displayName="U1")
    return SubscriptionsApi(tenant)


async def test_a_subscription_exists_only_after_the_handshake(receiver: Receiver) -> None:
    graph = _api()
    created = await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users/u1/contacts"))
    assert created.status == 201 and isinstance(created.body, dict)
    assert created.body["clientState"] == "s3cret" and created.body["expirationDateTime"].endswith("Z")
    assert len(graph.validations) == 2  # the notification URL and the lifecycle URL
    for answer in ("json", "wrong"):
        receiver.answer = answer
        refused = await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users/u1/events"))
        assert refused.status == 400 and isinstance(refused.body, dict)
        assert "validation request failed" in refused.body["error"]["message"]
    foreign = await graph.handle("POST", "/subscriptions", {**_body(graph, receiver, "/users"),
                                                            "notificationUrl": "http://example.com/hook"})
    assert foreign.status == 400  # https, except on loopback
    assert len(graph.subscriptions) == 1


async def test_lifetimes_are_capped_per_resource(receiver: Receiver) -> None:
    graph = _api()
    assert (await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users", 41760))).status == 201
    assert (await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users", 41761))).status == 400
    assert (await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users/u1/contacts", 10081))).status == 400
    (subscription,) = graph.subscriptions.values()
    renew = await graph.handle("PATCH", f"/subscriptions/{subscription.id}",
                               {"expirationDateTime": _body(graph, receiver, "", 30000)["expirationDateTime"]})
    assert renew.status == 200 and isinstance(renew.body, dict)
    graph.tenant.clock.advance(30001 * 60)  # type: ignore[attr-defined]
    assert (await graph.handle("PATCH", f"/subscriptions/{subscription.id}", {})).status == 404  # expired: gone


async def test_changes_are_notified_with_the_documented_shape(receiver: Receiver) -> None:
    graph = _api()
    await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users/u1/contacts"))
    graph.tenant.put_contact("u1", "c1", displayName="C1")
    graph.tenant.add_folder("u1", "f1", "Other")
    graph.tenant.put_contact("u1", "c2", "f1", displayName="C2")  # not the default folder: not this subscription's
    graph.tenant.change_user("u1", displayName="Renamed")  # no /users subscription
    delivered = await graph.deliver()
    assert [d.status for d in delivered] == [202]
    (item,) = receiver.received[0]["value"]
    assert item["changeType"] == "created" and item["clientState"] == "s3cret"
    assert item["resourceData"]["id"] == "c1" and item["resource"] == "users/u1/contacts/c1"
    assert set(item) >= {"subscriptionId", "subscriptionExpirationDateTime", "tenantId"}


async def test_lifecycle_events_and_expiry(receiver: Receiver) -> None:
    graph = _api()
    await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users/u1/events"))
    (subscription,) = graph.subscriptions.values()
    graph.lifecycle(subscription.id, "missed")
    graph.lifecycle(subscription.id, "subscriptionRemoved")
    await graph.deliver()
    assert [r["value"][0]["lifecycleEvent"] for r in receiver.received] == ["missed", "subscriptionRemoved"]
    assert graph.subscriptions == {}  # removed by Graph
    await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/users/u1/events", 5))
    graph.tenant.clock.advance(6 * 60)  # type: ignore[attr-defined]
    graph.tenant.put_event("u1", "e1", subject="late")
    assert graph.pending == []  # expired subscriptions notify nothing


async def test_directory_subscriptions_are_limited_per_app_and_tenant(receiver: Receiver) -> None:
    graph = _api()
    for _ in range(DIRECTORY_LIMIT):
        assert (await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/groups"))).status == 201
    assert (await graph.handle("POST", "/subscriptions", _body(graph, receiver, "/groups"))).status == 403
