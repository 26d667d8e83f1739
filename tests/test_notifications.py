"""Graph change notifications trigger the reads, on the simulator (issue 25):
the handshake; forged or unknown clientStates read nothing; a burst is one
read; renewals come before expiry; each lifecycle event is handled; a lost
notification is caught by the users poll; a failed handshake is reported
and polling goes on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from conftest import HANG_GUARD, until
from daemon import status
from daemon.auth.states import DISCONNECTED
from daemon.errors import GraphUnavailable
from daemon.notify.subscriptions import NOTIFY_PATH
from daemon.pbx.schema import PBX_USER
from notify_fixtures import TENANT, Notified, start_notified
from scenario import user_id
from sim.pbx import ScimServer
from sim.world import free_port
from state.notify_store import NotifyStore, StoredSubscription


def _metric(setup: Notified, name: str, **labels: str) -> float:
    value = setup.service.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def _pbx_resources(setup: Notified, endpoint: str) -> list[dict[str, Any]]:
    """The PBX's users or contacts, as SCIM lists them."""
    assert setup.world.pbx is not None
    async with aiohttp.ClientSession() as session, session.get(
            f"{setup.world.pbx.url(setup.world.pbx_tenant)}/{endpoint}?count=1000",
            headers={"Authorization": f"Bearer {setup.world.pbx.token}"}) as response:
        body: dict[str, Any] = await response.json(content_type=None)
    return list(body.get("Resources", []))


async def _pbx_names(setup: Notified, endpoint: str) -> set[str]:
    return {str(r.get("displayName")) for r in await _pbx_resources(setup, endpoint)}


async def test_the_handshake_answers_the_decoded_token_and_every_subscription_was_validated(
        notified: Notified) -> None:
    resources = notified.resource_ids()
    assert {"users", "groups"} <= resources.keys()
    assert {f"users/{user_id(i)}/contacts" for i in range(1, 7)} <= resources.keys()
    assert notified.graph.validations and all(status == 200 for _, status in notified.graph.validations)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{notified.base()}{NOTIFY_PATH}{TENANT}?validationToken=a%2Bb%20c%26d") as answer:
            assert (answer.status, answer.content_type, await answer.text()) == (200, "text/plain", "a+b c&d")
        async with session.post(f"{notified.base()}{NOTIFY_PATH}nobody?validationToken=x") as answer:
            assert answer.status == 404  # no echo for a tenant without notifications
        async with session.post(f"{notified.base()}{NOTIFY_PATH}{TENANT}?validationToken=%0Aevil") as answer:
            assert answer.status == 400  # only printable tokens are echoed
    fresh = (await notified.service.supervisor.status_reports())[0].freshness
    assert fresh["mode"] == "push" and fresh["subscriptions"] == len(resources)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {notified.world.admin_token}"}) as session:
        async with session.get(f"{notified.base()}/") as page:
            assert f"push ({len(resources)} subscriptions" in await page.text()
    assert _metric(notified, "m365sync_subscriptions", tenant=TENANT, state="active") == len(resources)
    assert _metric(notified, "m365sync_notifications_reachable", tenant=TENANT) == 1


async def test_a_forged_or_unknown_client_state_is_rejected_and_nothing_is_read(notified: Notified) -> None:
    subscription = notified.graph.subscriptions[notified.resource_ids()["users"]]
    item = {"subscriptionId": subscription.id, "changeType": "updated", "resource": "users/x",
            "resourceData": {"id": "x"}, "tenantId": "t"}
    notified.graph.forge(subscription.notification_url, [{**item, "clientState": "forged"},
                                                         {**item, "clientState": None},
                                                         {**item, "subscriptionId": "not-ours",
                                                          "clientState": subscription.client_state}])
    delivered = await notified.graph.deliver()
    assert [d.status for d in delivered] == [202]
    await notified.settle_window()
    assert await notified.runs("notification") == []
    assert await NotifyStore(notified.service.store.db, notified.clock.time).take_due(TENANT) == []
    assert _metric(notified, "m365sync_notifications_rejected_total", tenant=TENANT, reason="client_state") == 2
    assert _metric(notified, "m365sync_notifications_rejected_total", tenant=TENANT, reason="unknown") == 1


async def test_a_burst_of_100_notifications_for_one_mailbox_makes_one_read(notified: Notified) -> None:
    for version in range(100):
        notified.world.tenant.put_contact(user_id(1), "c-001-0", displayName=f"Burst {version}",
                                          mobilePhone="+1 555 0100")
    delivered = await notified.graph.deliver()
    assert len(delivered) == 100 and {d.status for d in delivered} == {202}
    await notified.settle_window()

    async def read() -> bool:
        await notified.clock.settle()
        return await notified.finished_runs("notification") >= 1

    await until(read, HANG_GUARD, "the notified read")
    await notified.settle_window()
    assert len(await notified.runs("notification")) == 1
    assert "Burst 99" in await _pbx_names(notified, "Contacts")
    assert _metric(notified, "m365sync_freshness_seconds_count", tenant=TENANT, kind="contact",
                   trigger="notification") == 1
    assert _metric(notified, "m365sync_notifications_received_total", tenant=TENANT, kind="contact") == 100


async def test_subscriptions_are_renewed_before_they_expire(notified: Notified) -> None:
    notifications = notified.service.notifications
    assert notifications is not None
    before = {s.id: s.expires for s in notified.graph.subscriptions.values()}
    await notifications.keep(TENANT)
    assert notified.world.sim is not None
    assert [r for r in notified.world.sim.requests("^/subscriptions/") if r.method == "PATCH"] == []  # not yet
    notified.clock.advance(4 * 86400)  # past half of the Outlook lifetime (10,000 min), well before its end
    await notifications.keep(TENANT)
    patched = [r for r in notified.world.sim.requests("^/subscriptions/") if r.method == "PATCH"]
    outlook = [i for i, s in notified.graph.subscriptions.items() if s.resource.endswith("/contacts")]
    assert len(patched) == len(outlook)
    for subscription_id in outlook:
        assert notified.graph.subscriptions[subscription_id].expires > before[subscription_id]
    users = notified.resource_ids()["users"]
    for _ in range(4):  # 16 days in steps of 4: past half the directory lifetime (41,000 min) as well
        notified.clock.advance(4 * 86400)
        await notifications.keep(TENANT)
        assert all(s.expires > notified.clock.now() for s in notified.graph.subscriptions.values())
    assert notified.graph.subscriptions[users].expires > before[users]
    assert notified.resource_ids()["users"] == users  # renewed, never lapsed and created again


async def test_lifecycle_events_reauthorize_recreate_and_read(notified: Notified) -> None:
    assert notified.world.sim is not None
    ids = notified.resource_ids()
    contacts = f"users/{user_id(2)}/contacts"
    notified.graph.lifecycle(ids["users"], "reauthorizationRequired")
    notified.graph.lifecycle(ids[contacts], "subscriptionRemoved")
    notified.graph.lifecycle(ids[f"users/{user_id(3)}/contacts"], "missed")
    assert {d.status for d in await notified.graph.deliver()} == {202}
    await notified.settle_window()

    async def handled() -> bool:
        await notified.clock.settle()
        return await notified.finished_runs("notification") >= 1 and contacts in notified.resource_ids()

    await until(handled, HANG_GUARD, "the lifecycle events handled")
    reauthorized = [r for r in notified.world.sim.requests(f"^/subscriptions/{ids['users']}/reauthorize$")
                    if r.method == "POST"]
    assert len(reauthorized) == 1 and reauthorized[0].status == 204
    assert notified.resource_ids()[contacts] != ids[contacts]  # removed, then created again
    assert len(await notified.runs("notification")) == 1  # removed + missed: one read


async def test_a_lost_notification_is_caught_by_the_users_poll(notified: Notified) -> None:
    notified.world.tenant.change_user(user_id(4), displayName="Renamed While Unheard")
    assert notified.graph.drop_pending() == 1  # Graph gave up delivering it
    await notified.settle_window()
    assert await notified.runs("notification") == []
    await notified.clock.advance_async(60)  # [tenants.users] poll_seconds: the backstop poll

    async def polled() -> bool:
        await notified.clock.settle()
        return await notified.finished_runs("users-poll") >= 1

    await until(polled, HANG_GUARD, "the users poll")
    assert "Renamed While Unheard" in await _pbx_names(notified, "Users")


async def test_a_failed_handshake_is_reported_polling_goes_on_and_it_is_tried_again(
        tmp_path: Path, scim_server_one_by_one: ScimServer) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"  # a proxy that does not forward /api/graph/ yet
    setup = await start_notified(tmp_path / "world", scim_server_one_by_one, public_url=unreachable)
    try:
        assert setup.world.sim is not None and setup.service.notifications is not None

        async def tried() -> bool:
            await setup.clock.settle()
            return bool(setup.graph.validations)

        await until(tried, HANG_GUARD, "a subscription attempt")
        assert setup.graph.subscriptions == {}
        report = (await setup.service.supervisor.status_reports())[0]
        assert report.freshness["mode"] == "poll" and report.freshness["reachable"] is False  # the users poll goes on
        assert "/api/graph/" in report.freshness["reason"]
        assert "freshness: poll: Graph could not validate" in status.as_text([report])  # m365sync status
        assert _metric(setup, "m365sync_notifications_reachable", tenant=TENANT) == 0
        attempts = len(setup.world.sim.requests("^/subscriptions$"))
        await setup.service.notifications.keep(TENANT)
        assert len(setup.world.sim.requests("^/subscriptions$")) == attempts  # not again at once
        # tried again 5 minutes after the first failure, then doubling with each failure in a row, up to the hour
        for wait in (300, 600, 1200, 2400, 3600, 3600):
            setup.clock.advance(wait - 1)
            await setup.service.notifications.keep(TENANT)
            await setup.clock.settle()
            assert len(setup.world.sim.requests("^/subscriptions$")) == attempts, wait  # not yet
            setup.clock.advance(1)
            await setup.service.notifications.keep(TENANT)
            await setup.clock.settle()
            attempts += 1
            assert len(setup.world.sim.requests("^/subscriptions$")) == attempts, wait  # tried again, failed again
        assert (await setup.runs("startup"))[0].result == "success"  # syncing went on
    finally:
        await setup.service.stop()
        await setup.world.stop()


async def test_a_calendar_change_is_read_at_once_as_busy_windows(tmp_path: Path, scim_server_one_by_one: ScimServer
                                                                 ) -> None:
    setup = await start_notified(tmp_path / "world", scim_server_one_by_one,
                                 sections="\n[tenants.events]\nenabled = true\n")
    try:
        async def subscribed() -> bool:
            await setup.clock.settle()
            return f"users/{user_id(1)}/events" in setup.resource_ids()

        await until(subscribed, HANG_GUARD, "the calendar subscriptions")
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)  # the calendar window is the runner's
        setup.world.tenant.put_event(user_id(1), "meeting", subject="private", showAs="busy", isCancelled=False,
                                     isAllDay=False,
                                     start={"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
                                     end={"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                                          "timeZone": "UTC"})
        assert {d.status for d in await setup.graph.deliver()} == {202}
        await setup.settle_window()

        async def busy_written() -> bool:
            await setup.clock.settle()
            return _metric(setup, "m365sync_freshness_seconds_count", tenant=TENANT, kind="busy",
                           trigger="notification") == 1

        await until(busy_written, HANG_GUARD, "the notified calendar read")
        assert await setup.runs("notification") == []  # a busy read, not a directory run
        assert await _busy(setup, user_id(1)) == [start.strftime("%Y-%m-%dT%H:%M")]
    finally:
        await setup.service.stop()
        await setup.world.stop()


async def _busy(setup: Notified, user: str) -> list[str]:
    """The starts (to the minute) of the user's busy windows on the PBX."""
    (found,) = [r for r in await _pbx_resources(setup, "Users") if r.get("externalId") == user]
    return [str(window["start"])[:16] for window in found.get(PBX_USER, {}).get("busy", [])]


async def test_a_disconnected_tenants_subscriptions_are_deleted(notified: Notified) -> None:
    assert notified.world.sim is not None and notified.service.notifications is not None
    count = len(notified.graph.subscriptions)
    await notified.service.store.set_auth_state(TENANT, DISCONNECTED, reason="m365sync disconnect")
    await notified.service.notifications.keep(TENANT)
    assert notified.graph.subscriptions == {}
    deleted = [r for r in notified.world.sim.requests("^/subscriptions/") if r.method == "DELETE"]
    assert len(deleted) == count and {r.status for r in deleted} == {204}
    assert await NotifyStore(notified.service.store.db, notified.clock.time).subscriptions(TENANT) == []


async def test_a_removed_tenants_subscriptions_are_deleted_at_graph(notified: Notified) -> None:
    assert notified.world.sim is not None and notified.service.notifications is not None
    count = len(notified.graph.subscriptions)
    config = notified.service.supervisor.config
    await notified.service.supervisor.apply(replace(config, tenants=()))  # what a reload without it does

    async def deleted() -> bool:
        await notified.clock.settle()
        return notified.graph.subscriptions == {}

    await until(deleted, HANG_GUARD, "the removed tenant's subscriptions deleted")
    deletes = [r for r in notified.world.sim.requests("^/subscriptions/") if r.method == "DELETE"]
    assert len(deletes) == count and {r.status for r in deletes} == {204}
    assert await NotifyStore(notified.service.store.db, notified.clock.time).subscriptions(TENANT) == []


async def test_a_tenant_removed_while_no_daemon_ran_is_forgotten_at_start(notified: Notified) -> None:
    """Its credentials went with its settings, so Graph keeps its subscriptions until they expire; the
    state forgets them (and its due reads) at start-up, and the warning says until when."""
    notifications = notified.service.notifications
    assert notifications is not None
    store, now = notifications.store, notified.clock.time()
    await notified.service.store.register_tenant("gone", "d", "a")  # its state stays until `m365sync forget`
    await store.put_subscription("gone", StoredSubscription("sub-gone", "user", "users", None, now + 86400, b"x"))
    await store.mark_due("gone", [("user", None)], now)
    ours = await store.kept(TENANT)
    await notifications.stop()
    with structlog.testing.capture_logs() as logs:
        notifications.start()  # as a daemon starting with a configuration that no longer names "gone"

        async def forgotten() -> bool:
            await notified.clock.settle()
            return await store.subscribed_tenants() == [TENANT]

        await until(forgotten, 30, "the removed tenant's subscriptions forgotten")
    assert await store.take_due("gone") == [] and await store.kept(TENANT) == ours
    (warning,) = [e for e in logs if e.get("tenant") == "gone"]
    assert warning["log_level"] == "warning" and warning["subscriptions"] == 1
    assert warning["expire_by"] == datetime.fromtimestamp(now + 86400, UTC).isoformat(timespec="seconds")


async def test_on_a_shared_state_a_tenant_another_daemon_may_configure_is_not_forgotten(notified: Notified) -> None:
    """Hosts of a shared state are updated one at a time: the tenant this configuration lacks may be
    another daemon's, whose notifications must go on."""
    notifications = notified.service.notifications
    assert notifications is not None
    store = notifications.store
    await notified.service.store.register_tenant("gone", "d", "a")
    await store.put_subscription("gone", StoredSubscription("sub-gone", "user", "users", None,
                                                            notified.clock.time() + 86400, b"x"))
    notifications.daemon = replace(notifications.daemon, shared=True)
    await notifications.forget_unconfigured()
    assert "gone" in await store.subscribed_tenants()
    notifications.daemon = replace(notifications.daemon, shared=False)
    await notifications.forget_unconfigured()
    assert "gone" not in await store.subscribed_tenants()


async def test_a_failing_notified_read_logs_one_line_with_its_code_and_no_traceback(notified: Notified) -> None:
    assert notified.service.notifications is not None
    service = notified.service.notifications

    async def failing(tenant: str) -> None:
        raise GraphUnavailable("Graph did not answer", status=503, code="ServiceUnavailable", upstream="\n".join(
            ["a body that spans", "lines"]))

    service.debouncer.drain = failing
    with structlog.testing.capture_logs() as logs:
        service.debouncer.wake(TENANT)
        await notified.settle_window()
    (line,) = [e for e in logs if e["event"] == "a notified read failed"]
    assert line["log_level"] == "warning" and line["code"] == "ServiceUnavailable"
    assert "exc_info" not in line and "\n" not in line["error"] and "spans" not in line["error"]
