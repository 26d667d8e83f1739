"""Pure mapping from Graph objects to SCIM payloads, diffs and filters."""

from __future__ import annotations

import pytest

from daemon.pbx.filters import eq_filter, scim_string
from daemon.pbx.mapping import (
    contact_payload,
    flatten,
    has_phone_number,
    patch_operations,
    payload_hash,
    photo_data_uri,
    user_payload,
)
from daemon.pbx.schema import PBX_USER


def test_empty_optional_fields_are_omitted_and_phones_kept_as_given() -> None:
    payload = user_payload(
        {"id": "u1", "userPrincipalName": "a@b.example", "displayName": "A", "givenName": "", "surname": None,
         "jobTitle": "   ", "businessPhones": ["", "+1 (425) 555-0100 x 42"], "mobilePhone": None, "mail": None},
        extension_number="1001", active=True, sign_in_as_administrator=False, sign_in_as_standard_user=False,
    )
    assert "name" not in payload and "title" not in payload and "emails" not in payload and "photos" not in payload
    assert payload["phoneNumbers"] == [{"value": "+1 (425) 555-0100 x 42", "type": "work"}]
    assert "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User" not in payload
    assert payload[PBX_USER]["extensionNumber"] == "1001"


def test_inactive_is_sent_as_false_not_omitted() -> None:
    payload = user_payload({"id": "u1", "userPrincipalName": "a@b"}, extension_number="1001", active=False,
                           sign_in_as_administrator=False, sign_in_as_standard_user=False)
    assert payload["active"] is False


def test_photo_is_a_data_uri() -> None:
    assert photo_data_uri(b"\xff\xd8\xff") == "data:image/jpeg;base64,/9j/"


def test_contact_phone_types_and_emails() -> None:
    contact = {"id": "c1", "businessPhones": ["+1 1", "+1 2"], "homePhones": ["+1 3"], "mobilePhone": "+1 4",
               "emailAddresses": [{"name": "x", "address": "x@y"}, {"name": "no address"}], "surname": "Z"}
    payload = contact_payload(contact, directory="company", source="reception@contoso.example")
    assert payload["phoneNumbers"] == [
        {"value": "+1 1", "type": "work"}, {"value": "+1 2", "type": "work"},
        {"value": "+1 3", "type": "home"}, {"value": "+1 4", "type": "mobile"},
    ]
    assert payload["emails"] == [{"value": "x@y", "type": "work"}]
    assert payload["familyName"] == "Z" and "owner" not in payload
    assert has_phone_number(contact) and not has_phone_number({"id": "c2", "businessPhones": [""]})


def test_patch_of_identical_payloads_is_empty_and_hash_is_stable() -> None:
    a = {"schemas": ["s"], "displayName": "X", "name": {"givenName": "G"}, "urn:x:y:User": {"n": "1"}}
    b = {"urn:x:y:User": {"n": "1"}, "name": {"givenName": "G"}, "displayName": "X", "schemas": ["s"]}
    assert patch_operations(a, b) == []
    assert payload_hash(a) == payload_hash(b)
    assert flatten(a) == {"displayName": "X", "name.givenName": "G", "urn:x:y:User:n": "1"}
    assert patch_operations(a, {**b, "name": {"familyName": "F"}}) == [
        {"op": "add", "path": "name.familyName", "value": "F"},
        {"op": "remove", "path": "name.givenName"},
    ]


@pytest.mark.parametrize(
    ("value", "literal"),
    [('O\'Brien "Bob"', '"O\'Brien \\"Bob\\""'), ("back\\slash", '"back\\\\slash"'), ("ünï", '"ünï"')],
)
def test_filter_values_are_json_string_literals(value: str, literal: str) -> None:
    assert scim_string(value) == literal
    assert eq_filter("displayName", value) == f"displayName eq {literal}"


def test_filter_refuses_an_attribute_that_is_not_a_path() -> None:
    with pytest.raises(ValueError):
        eq_filter('userName eq "x" or userName', "y")
    assert eq_filter(f"{PBX_USER}:extensionNumber", "1001") == f'{PBX_USER}:extensionNumber eq "1001"'
