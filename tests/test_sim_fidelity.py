"""The simulator answers with the shapes Microsoft documents (and its
engineers report), one test per behaviour; the source is cited at each
behaviour in ``sim/``. A kinder simulator would hide the defects that matter."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from graph_fixtures import GraphEnv
from sim.answers import SimRequest, SimResponse, graph_error

BASE = "http://graph.test"


def ask(env: GraphEnv, url: str, **headers: str) -> SimResponse:
    """The simulator's answer to one GET (a path below /v1.0, or a link it gave)."""
    parts = urlsplit(url)
    path = parts.path.split("/v1.0", 1)[-1]
    return env.sim.api.dispatch(SimRequest("GET", path, dict(parse_qsl(parts.query)),
                                           {k.lower().replace("_", "-"): v for k, v in headers.items()}, BASE))


def body(response: SimResponse) -> dict[str, Any]:
    assert isinstance(response.body, dict), response
    return response.body


def mailbox(env: GraphEnv, user: str = "u1", folders: int = 0) -> str:
    env.tenant.add_user(user, displayName=user, userPrincipalName=f"{user}@contoso.example")
    for index in range(folders):
        env.tenant.add_folder(user, f"f{index:02d}", f"Folder {index}")
    return user


def test_outlook_collections_page_by_ten_unless_top_or_maxpagesize_say_otherwise(graph_env: GraphEnv) -> None:
    user = mailbox(graph_env, folders=12)
    for index in range(12):
        graph_env.tenant.put_contact(user, f"c{index:02d}", displayName=f"C {index}")
    first = body(ask(graph_env, f"/users/{user}/contactFolders"))
    assert len(first["value"]) == 10 and "$skip=10" in first["@odata.nextLink"]
    second = body(ask(graph_env, first["@odata.nextLink"]))
    assert len(second["value"]) == 2 and "@odata.nextLink" not in second
    assert len(body(ask(graph_env, f"/users/{user}/contactFolders?$top=5"))["value"]) == 5
    assert len(body(ask(graph_env, f"/users/{user}/contactFolders", prefer="odata.maxpagesize=3"))["value"]) == 3
    delta = body(ask(graph_env, f"/users/{user}/contactFolders/contacts/contacts/delta"))
    assert len(delta["value"]) == 10 and "@odata.nextLink" in delta
    listing = body(ask(graph_env, f"/users/{user}/contactFolders/contacts/contacts"))
    assert len(listing["value"]) == 10 and "@odata.nextLink" in listing


def test_contact_folders_list_the_top_level_and_sub_folders_come_from_child_folders(graph_env: GraphEnv) -> None:
    user = mailbox(graph_env, folders=1)
    graph_env.tenant.add_folder(user, "sub", "Sub", parent="f00")
    assert [f["id"] for f in body(ask(graph_env, f"/users/{user}/contactFolders"))["value"]] == ["f00"]
    children = body(ask(graph_env, f"/users/{user}/contactFolders/f00/childFolders"))["value"]
    assert children == [{"id": "sub", "displayName": "Sub", "parentFolderId": "f00"}]
    assert body(ask(graph_env, f"/users/{user}/contactFolders/sub/childFolders"))["value"] == []
    assert ask(graph_env, f"/users/{user}/contactFolders/nope/childFolders").status == 404


def _event(env: GraphEnv, user: str, event_id: str, start: str, end: str, zone: str, all_day: bool) -> None:
    env.tenant.put_event(user, event_id, subject="s", showAs="oof", isCancelled=False, isAllDay=all_day,
                         start={"dateTime": start, "timeZone": zone}, end={"dateTime": end, "timeZone": zone})


def test_events_come_in_the_requested_zone_and_all_day_ones_as_its_midnight(graph_env: GraphEnv) -> None:
    user = mailbox(graph_env)
    _event(graph_env, user, "a-day", "2026-12-03T00:00:00", "2026-12-04T00:00:00", "AUS Eastern Standard Time", True)
    _event(graph_env, user, "b-call", "2026-12-03T09:00:00", "2026-12-03T09:30:00", "AUS Eastern Standard Time", False)
    url = f"/users/{user}/calendarView/delta?startDateTime=2026-11-30T00:00:00Z&endDateTime=2026-12-14T00:00:00Z"
    day, call = body(ask(graph_env, url))["value"]
    assert day["start"] == {"dateTime": "2026-12-03T00:00:00.0000000", "timeZone": "UTC"}  # not Sydney's midnight
    assert day["end"] == {"dateTime": "2026-12-04T00:00:00.0000000", "timeZone": "UTC"}
    assert day["originalStartTimeZone"] == day["originalEndTimeZone"] == "AUS Eastern Standard Time"
    assert call["start"] == {"dateTime": "2026-12-02T22:00:00.0000000", "timeZone": "UTC"}
    pacific = body(ask(graph_env, url, prefer='outlook.timezone="Pacific Standard Time"'))["value"]
    assert pacific[0]["start"] == {"dateTime": "2026-12-03T00:00:00.0000000", "timeZone": "Pacific Standard Time"}
    assert pacific[1]["start"] == {"dateTime": "2026-12-02T14:00:00.0000000", "timeZone": "Pacific Standard Time"}


def test_delta_answers_omit_properties_never_set_and_send_null_for_cleared_ones(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="One", jobTitle="Engineer")  # no mobilePhone, ever
    first = body(ask(graph_env, "/users/delta?$select=displayName,jobTitle,mobilePhone"))
    (user,) = first["value"]
    assert "mobilePhone" not in user and user["jobTitle"] == "Engineer"
    graph_env.tenant.change_user("u1", jobTitle=None)
    (changed,) = body(ask(graph_env, first["@odata.deltaLink"]))["value"]
    assert changed["jobTitle"] is None and "mobilePhone" not in changed
    plain = body(ask(graph_env, "/users/u1?$select=displayName,mobilePhone"))
    assert plain["mobilePhone"] is None  # a plain GET shows every selected property


def test_delegated_mode_reads_only_the_signed_in_users_mailbox_settings(graph_env: GraphEnv) -> None:
    owner, other, sharing = mailbox(graph_env, "owner"), mailbox(graph_env, "other"), mailbox(graph_env, "sharing")
    graph_env.sim.api.settings.signed_in_user = owner
    graph_env.sim.api.settings.shared_with_delegate.add(sharing)
    assert ask(graph_env, f"/users/{owner}/mailboxSettings").status == 200
    for user in (other, sharing):  # a share opens contacts and calendars, never mailboxSettings
        denied = ask(graph_env, f"/users/{user}/mailboxSettings")
        assert denied.status == 403 and body(denied)["error"]["code"] == "ErrorAccessDenied"
    assert ask(graph_env, f"/users/{other}/contactFolders").status == 403
    assert ask(graph_env, f"/users/{sharing}/contactFolders").status == 200


def test_the_china_cloud_has_no_contacts_delta_but_lists_contacts_and_has_events_delta(graph_env: GraphEnv) -> None:
    user = mailbox(graph_env)
    graph_env.sim.api.settings.china = True
    missing = ask(graph_env, f"/users/{user}/contactFolders/contacts/contacts/delta")
    assert missing.status == 400 and "segment 'delta'" in body(missing)["error"]["message"]
    assert ask(graph_env, f"/users/{user}/contactFolders/contacts/contacts").status == 200
    window = "startDateTime=2026-11-30T00:00:00Z&endDateTime=2026-12-14T00:00:00Z"
    assert "@odata.deltaLink" in body(ask(graph_env, f"/users/{user}/calendarView/delta?{window}"))


def test_errors_can_carry_their_specific_code_in_a_nested_inner_error(graph_env: GraphEnv) -> None:
    error = body(graph_error(400, "BadRequest", "x", inner_code="syncStateNotFound"))["error"]
    assert error["code"] == "BadRequest" and error["innerError"]["code"] == "syncStateNotFound"
    assert {"request-id", "date", "client-request-id"} <= set(error["innerError"])


def test_photo_sizes_larger_than_the_uploaded_photo_answer_404(graph_env: GraphEnv) -> None:
    user = mailbox(graph_env)
    graph_env.tenant.set_photo(user, b"\xff\xd8\xffJPEG")
    graph_env.tenant.photos[user].width = graph_env.tenant.photos[user].height = 120
    assert ask(graph_env, f"/users/{user}/photos/96x96/$value").status == 200
    assert ask(graph_env, f"/users/{user}/photos/120x120/$value").status == 200
    too_large = ask(graph_env, f"/users/{user}/photos/240x240/$value")
    assert too_large.status == 404 and body(too_large)["error"]["code"] == "ImageNotFound"
    assert ask(graph_env, f"/users/{user}/photo/$value").body == b"\xff\xd8\xffJPEG"


def presences(env: GraphEnv, ids: Any) -> SimResponse:
    """``POST /communications/getPresencesByUserId`` with ``{"ids": ids}``."""
    return env.sim.api.dispatch(SimRequest("POST", "/communications/getPresencesByUserId", {}, {}, BASE,
                                           body={"ids": ids}))


def test_presence_answers_up_to_650_ids_a_call_and_400_above(graph_env: GraphEnv) -> None:
    users = [mailbox(graph_env, f"p{index:03d}") for index in range(651)]
    answer = presences(graph_env, users[:650])
    assert answer.status == 200 and len(body(answer)["value"]) == 650
    too_many = presences(graph_env, users)
    assert too_many.status == 400 and body(too_many)["error"]["code"] == "BadRequest"
    assert presences(graph_env, "p000").status == 400  # ids is a collection


def test_presence_is_unknown_until_set_and_changes_on_demand(graph_env: GraphEnv) -> None:
    alice, bob = mailbox(graph_env, "alice"), mailbox(graph_env, "bob")
    assert body(presences(graph_env, [alice, bob, "no-such-user"]))["value"] == [
        {"id": alice, "availability": "PresenceUnknown", "activity": "PresenceUnknown"},
        {"id": bob, "availability": "PresenceUnknown", "activity": "PresenceUnknown"},
    ]
    graph_env.sim.api.presence.set(alice, "Busy", "InAMeeting")
    assert body(presences(graph_env, [alice]))["value"] == [{"id": alice, "availability": "Busy", "activity": "InAMeeting"}]
    assert presences(graph_env, ["alice@contoso.example"]).body == {"value": []}  # object ids, not UPNs


def test_presence_allows_1500_calls_in_30_seconds_then_429_with_retry_after(graph_env: GraphEnv) -> None:
    alice = mailbox(graph_env, "alice")
    assert all(presences(graph_env, [alice]).status == 200 for _ in range(1500))
    throttled = presences(graph_env, [alice])
    assert throttled.status == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 31
    graph_env.clock.advance(30)
    assert presences(graph_env, [alice]).status == 200
