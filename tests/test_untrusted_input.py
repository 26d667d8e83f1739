"""Nothing Graph sends is trusted: each object is parsed at the read
(``daemon/graph/records.py``), and one object's failure anywhere later
(mapping, hashing, planning, writing) fails that object alone, recorded and
retried on a backoff, while the run goes on and ends ``partial``."""

from __future__ import annotations

from typing import Any

import pytest

from daemon import status
from daemon.graph.records import MAX_TEXT, Rejected, clean_text, parse
from state.pushed import retry_delay
from sync_fixtures import OneTenantConfig, SyncEnv, add_user


async def status_of(env: SyncEnv) -> status.TenantReport:
    config = OneTenantConfig(env.tenant, env.tmp_path / "m365sync.toml")
    (report,) = await status.collect(config, env.store, env.sync_store)  # type: ignore[arg-type]
    return report


# --- the records ---


@pytest.mark.parametrize(("raw", "kept"), [
    ("\ud800", "\ufffd"),                    # a lone surrogate: UTF-8 cannot carry it
    ("a\ud83d\ude00b", "a\U0001f600b"),       # a pair (as JSON's "\ud83d\ude00" may decode) is one character
    ("Ali\0ce", "Alice"),
    (42, "42"),
    ("ok", "ok"),
])
def test_text_is_normalized_where_its_meaning_is_clear(raw: Any, kept: str) -> None:
    record = parse("user", {"id": "u1", "displayName": raw})
    assert not isinstance(record, Rejected) and record["displayName"] == kept
    assert record["displayName"].encode("utf-8")


def test_lists_and_flags_are_normalized_and_the_rest_is_rejected_with_a_reason() -> None:
    user = parse("user", {"id": "u1", "businessPhones": "+1 555", "accountEnabled": "true", "extra": {"x": 1}})
    assert user == {"id": "u1", "businessPhones": ["+1 555"], "accountEnabled": True}  # only what is kept
    contact = parse("contact", {"id": "c1", "emailAddresses": "a@b.example"})
    assert not isinstance(contact, Rejected) and contact["emailAddresses"] == [{"address": "a@b.example"}]
    for item, where in [({"id": "c1", "emailAddresses": 7}, "emailAddresses"),
                        ({"id": "c1", "displayName": "x" * (MAX_TEXT + 1)}, "displayName"),
                        ({"id": "c1", "mobilePhone": ["+1", "+2"]}, "mobilePhone")]:
        rejected = parse("contact", item)
        assert isinstance(rejected, Rejected) and rejected.id == "c1" and rejected.reason.startswith(where)
    for item in [{"displayName": "no id"}, {"id": 5}, {"id": "a\0b"}, "not an object"]:
        rejected = parse("user", item)
        assert isinstance(rejected, Rejected) and rejected.id is None


def test_a_partial_delta_item_keeps_only_what_it_carried_and_a_removal_its_reason() -> None:
    assert parse("user", {"id": "u1", "jobTitle": None}) == {"id": "u1", "jobTitle": None}
    assert parse("user", {"id": "u1", "@removed": {"reason": "changed"}}) == {"id": "u1", "@removed": {"reason": "changed"}}
    assert parse("contact", {"id": "c1", "_owner": "u1"}) == {"id": "c1", "_owner": "u1"}
    assert clean_text("plain") == "plain"


# --- the two findings, end to end ---


async def test_a_lone_surrogate_in_graph_is_normalized_and_everyone_lands(sync_env: SyncEnv) -> None:
    good = [add_user(sync_env, i) for i in (1, 3)]
    odd = add_user(sync_env, 2, displayName="\ud800", jobTitle="Eng\ud800ineer")  # JSON "\ud800" on the wire
    report = await sync_env.run()
    assert report.result == "success" and report.counts == {"create": 3}
    users = await sync_env.pbx_users()
    assert set(users) == {*good, odd} and users[odd]["displayName"] == "\ufffd"
    assert (await sync_env.run()).counts == {} and (await sync_env.run()).result == "success"


async def test_a_stored_copy_that_cannot_be_sent_fails_that_user_alone_and_waits_its_backoff(sync_env: SyncEnv) -> None:
    """A copy stored before the records existed (a lone surrogate in it) breaks the payload hash:
    that user fails, is recorded and shown, the others land, and it is not retried for an hour."""
    good = [add_user(sync_env, i) for i in (1, 3)]
    await sync_env.run()
    good += [add_user(sync_env, 4)]
    odd = "00000000-0000-4000-8000-000000000002"
    await sync_env.sync_store.merge_changes("t", "user", [{  # as the old read stored it, past the records
        "id": odd, "displayName": "\ud800", "userPrincipalName": "user002@contoso.example", "accountEnabled": True,
        "userType": "Member"}])
    report = await sync_env.run()
    assert report.result == "partial" and report.counts == {"create": 1, "failed": 1}
    assert set(await sync_env.pbx_users()) == set(good)
    assert any("user002@contoso.example" in line and "UnicodeEncodeError" in line for line in report.failures)
    shown = await status_of(sync_env)
    assert [(f["id"], f["failures"]) for f in shown.failed] == [(odd, 1)]
    assert "UnicodeEncodeError" in shown.failed[0]["error"] and "failed, tried again later: 1" in status.as_text([shown])
    writes = sync_env.pbx_writes()
    assert (await sync_env.run()).counts == {"waiting": 1} and sync_env.pbx_writes() == writes
    sync_env.graph.clock.advance(retry_delay(1))
    assert (await sync_env.run()).counts == {"failed": 1}
    row = await sync_env.sync_store.synced("t", "user", odd)
    assert row is not None and row.failures == 2 and row.retry_at == sync_env.graph.clock.time() + retry_delay(2)


async def test_a_contact_with_a_number_for_email_addresses_is_recorded_and_the_others_land(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    sync_env.graph.tenant.put_contact(owner, "c-good", displayName="Good", mobilePhone="+1 555 0100")
    sync_env.graph.tenant.put_contact(owner, "c-bad", displayName="Bad", mobilePhone="+1 555 0101", emailAddresses=7)
    sync_env.graph.tenant.put_contact(owner, "c-also", displayName="Also", mobilePhone="+1 555 0102",
                                      emailAddresses="also@contoso.example")  # one address: a one-item list
    sync_env.configure(personal_contacts={"enabled": True})
    report = await sync_env.run()
    assert report.result == "partial" and report.contacts.counts == {"create": 2, "failed": 1}
    contacts = await sync_env.pbx_contacts()
    assert set(contacts) == {"c-good", "c-also"}
    assert contacts["c-also"]["emails"] == [{"value": "also@contoso.example", "type": "work"}]
    assert any(line.startswith("contact Bad: rejected from Graph: emailAddresses") for line in report.failures)
    shown = await status_of(sync_env)
    assert [(f["kind"], f["id"], f["name"]) for f in shown.failed] == [("contact", "c-bad", "c-bad")]
    report = await sync_env.run()  # the bad contact is not read again until it changes: nothing to do
    assert report.result == "success" and report.contacts.counts == {}
    sync_env.graph.tenant.put_contact(owner, "c-bad", displayName="Bad", mobilePhone="+1 555 0101",
                                      emailAddresses=[{"address": "bad@contoso.example"}])
    report = await sync_env.run()
    assert report.contacts.counts == {"create": 1} and (await status_of(sync_env)).failed == []


async def test_a_user_rejected_at_the_read_is_not_taken_for_gone_by_a_full_round(sync_env: SyncEnv) -> None:
    ids = [add_user(sync_env, i) for i in (1, 2)]
    await sync_env.run()
    sync_env.graph.tenant.change_user(ids[1], displayName="x" * (MAX_TEXT + 1))
    sync_env.graph.sim.api.expire_delta_tokens("410")
    report = await sync_env.run()
    assert report.full_round and report.reconciled == 0 and report.result == "partial"
    assert report.counts == {"failed": 1} and (await sync_env.pbx_users())[ids[1]]["active"] is True
    row = await sync_env.sync_store.synced("t", "user", ids[1])
    assert row is not None and row.last_error is not None and "more than 1024" in row.last_error
