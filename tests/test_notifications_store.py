"""What a keeper round and start-up ask of the notification store, on both
backends: the round's one read comes in expiry order without the sealed
clientStates, a renewal and a reauthorization change one column each, and a
tenant no longer configured is found and forgotten whole (its subscriptions,
due reads and handshake), no other tenant's rows touched."""

from __future__ import annotations

from pathlib import Path

from state.notify_store import ACTIVE, REAUTHORIZE, Due, KeptSubscription, NotifyStore, StoredSubscription
from state.open import open_database
from state.store import Store


async def test_a_rounds_read_its_updates_and_forgetting_a_tenant(state_target: Path | str) -> None:
    db = await open_database(state_target)
    try:
        await Store(db, clock=lambda: 5.0).register_tenant("t", "d", "a")
        await Store(db, clock=lambda: 5.0).register_tenant("gone", "d", "a")
        store = NotifyStore(db, clock=lambda: 5.0)
        await store.put_subscription("t", StoredSubscription("b", "contact", "users/u1/contacts", "u1", 300.0, b"s1",
                                                             REAUTHORIZE, "reauthorizationRequired"))
        await store.put_subscription("t", StoredSubscription("a", "user", "users", None, 200.0, b"s2"))
        await store.put_subscription("gone", StoredSubscription("g", "user", "users", None, 900.0, b"s3"))
        await store.mark_due("gone", [("user", None)], 4.0)
        await store.mark_due("t", [("contact", "u1")], 4.0)
        await store.set_handshake("gone", False, "unreachable")

        assert await store.kept("t") == [KeptSubscription("a", "user", "users", ACTIVE, 200.0),
                                         KeptSubscription("b", "contact", "users/u1/contacts", REAUTHORIZE, 300.0)]
        await store.renewed("t", "a", 400.0)
        await store.reactivated("t", "b")
        assert [(s.id, s.state, s.expires_at) for s in await store.kept("t")] == [("b", ACTIVE, 300.0),
                                                                                 ("a", ACTIVE, 400.0)]
        untouched = await store.subscription("t", "b")
        assert untouched is not None and untouched.sealed_state == b"s1" and untouched.reason == "reauthorizationRequired"

        assert await store.subscribed_tenants() == ["gone", "t"]
        assert await store.has_subscriptions("gone")
        forgotten = await store.forget_notifications("gone")
        assert [s.id for s in forgotten] == ["g"] and forgotten[0].expires_at == 900.0
        assert await store.subscribed_tenants() == ["t"] and not await store.has_subscriptions("gone")
        assert await store.take_due("gone") == [] and await store.handshake("gone") is None
        assert await store.take_due("t") == [Due("contact", "u1", 4.0)]
    finally:
        await db.close()
