"""Graph objects to SCIM payloads, and payload differences to PATCH operations.

Pure functions, following the tables of VeloPBX's contract. Values are kept
as Graph gives them (a phone number's extension suffix survives), empty
optional values are omitted rather than sent as empty strings, and a PATCH
names only the attributes that changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.pbx.schema import ENTERPRISE_USER, PBX_CONTACT, PBX_GROUP, PBX_USER, SCHEMAS

Payload = dict[str, Any]
PatchOperation = dict[str, Any]


def _text(value: Any) -> str | None:
    """A non-empty string, or None for missing, null, blank or non-string values."""
    return value if isinstance(value, str) and value.strip() else None


def _strings(value: Any) -> list[str]:
    return [item for item in value if _text(item)] if isinstance(value, list) else []


def _without_empty(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in (None, "", [], {})}


def photo_data_uri(content: bytes, content_type: str = "image/jpeg") -> str:
    """The ``data:`` URI the PBX stores as the user's photo."""
    return f"data:{content_type};base64,{base64.b64encode(content).decode()}"


def user_payload(
    user: Mapping[str, Any],
    *,
    extension_number: str,
    active: bool,
    sign_in_as_administrator: bool,
    sign_in_as_standard_user: bool,
    photo: str | None = None,
) -> Payload:
    """The SCIM User for an Entra user (``busy`` is managed by the calendar sync)."""
    business = _strings(user.get("businessPhones"))
    phones = []
    if business:
        phones.append({"value": business[0], "type": "work"})
    mobile = _text(user.get("mobilePhone"))
    if mobile:
        phones.append({"value": mobile, "type": "mobile"})
    mail = _text(user.get("mail"))
    payload: Payload = {
        "schemas": list(SCHEMAS["User"]),
        "externalId": user["id"],
        "userName": user.get("userPrincipalName"),
        "displayName": _text(user.get("displayName")),
        "name": _without_empty({"givenName": _text(user.get("givenName")), "familyName": _text(user.get("surname"))}),
        "title": _text(user.get("jobTitle")),
        "emails": [{"value": mail, "type": "work", "primary": True}] if mail else [],
        "phoneNumbers": phones,
        "active": active,
        "photos": [{"value": photo, "type": "photo"}] if photo else [],
        ENTERPRISE_USER: _without_empty({"department": _text(user.get("department"))}),
        PBX_USER: {
            "extensionNumber": extension_number,
            "signInAsAdministrator": sign_in_as_administrator,
            "signInAsStandardUser": sign_in_as_standard_user,
        },
    }
    return _without_empty(payload) | {"active": active}


def group_payload(group: Mapping[str, Any], *, extension_number: str, member_ids: Sequence[str]) -> Payload:
    """The SCIM Group for an Entra group; members are SCIM ids of synced users."""
    return _without_empty(
        {
            "schemas": list(SCHEMAS["Group"]),
            "externalId": group["id"],
            "displayName": _text(group.get("displayName")) or group["id"],
            "members": [{"value": member} for member in sorted(member_ids)],
            PBX_GROUP: _without_empty({"extensionNumber": extension_number, "email": _text(group.get("mail"))}),
        }
    )


def contact_payload(
    contact: Mapping[str, Any],
    *,
    directory: str,
    source: str,
    owner: str | None = None,
) -> Payload:
    """The SCIM Contact for an Outlook contact (personal or from a shared mailbox)."""
    phones = [{"value": number, "type": "work"} for number in _strings(contact.get("businessPhones"))]
    phones += [{"value": number, "type": "home"} for number in _strings(contact.get("homePhones"))]
    mobile = _text(contact.get("mobilePhone"))
    if mobile:
        phones.append({"value": mobile, "type": "mobile"})
    emails = [
        {"value": address["address"], "type": "work"}
        for address in contact.get("emailAddresses") or []
        if isinstance(address, Mapping) and _text(address.get("address"))
    ]
    return _without_empty(
        {
            "schemas": [PBX_CONTACT],
            "externalId": contact["id"],
            "directory": directory,
            "owner": owner,
            "source": source,
            "displayName": _text(contact.get("displayName")),
            "givenName": _text(contact.get("givenName")),
            "familyName": _text(contact.get("surname")),
            "companyName": _text(contact.get("companyName")),
            "jobTitle": _text(contact.get("jobTitle")),
            "phoneNumbers": phones,
            "emails": emails,
        }
    )


def has_phone_number(contact: Mapping[str, Any]) -> bool:
    return bool(_strings(contact.get("businessPhones")) or _strings(contact.get("homePhones")) or _text(contact.get("mobilePhone")))


_NOT_PATCHED = frozenset({"schemas", "id", "meta"})


def flatten(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Payload as PATCH paths: ``name.givenName``, ``urn:...:User:extensionNumber``, lists whole.

    Called for every applied write (its history entry) and every changed object: the
    ``dict`` test comes first because the ``Mapping`` one goes through the ABC machinery."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if key in _NOT_PATCHED:
            continue
        if (key == "name" or key.startswith("urn:")) and (isinstance(value, dict) or isinstance(value, Mapping)):
            prefix = "name." if key == "name" else f"{key}:"
            for sub, sub_value in value.items():
                flat[prefix + sub] = sub_value
        else:
            flat[key] = value
    return flat


def patch_operations(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[PatchOperation]:
    """The ``add``/``replace``/``remove`` operations turning payload ``old`` into ``new``."""
    before, after = flatten(old), flatten(new)
    operations: list[PatchOperation] = []
    for path in sorted(before.keys() | after.keys()):
        if path not in after:
            operations.append({"op": "remove", "path": path})
        elif path not in before:
            operations.append({"op": "add", "path": path, "value": after[path]})
        elif before[path] != after[path]:
            operations.append({"op": "replace", "path": path, "value": after[path]})
    return operations


def payload_hash(payload: Mapping[str, Any]) -> str:
    """A stable fingerprint of a payload: equal payloads, equal hashes."""
    return text_hash(canonical_text(payload))


def canonical_text(payload: Mapping[str, Any]) -> str:
    """A payload as one text whatever its key order: what :func:`payload_hash` hashes, and the
    stored copy of what was pushed (serialised once for both)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def text_hash(text: str) -> str:
    """:func:`payload_hash` of the payload whose :func:`canonical_text` is ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


def managed_view(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a PBX object that our payload manages; the rest is left alone
    when we adopt or recover an object we did not record."""
    view: dict[str, Any] = {}
    for key in desired:
        if key in existing:
            value = existing[key]
            if isinstance(value, Mapping) and isinstance(desired[key], Mapping):
                value = {k: v for k, v in value.items() if k in desired[key]}
            view[key] = _managed_items(value, desired[key])
    return view


def _managed_items(existing: Any, desired: Any) -> Any:
    """A multi-valued complex attribute as far as we manage it: each item with only the
    sub-attributes our items carry (a server adds ``$ref``, ``display``), in our order
    when it holds the same items (its order means nothing)."""
    if not (isinstance(existing, list) and isinstance(desired, list) and desired
            and all(isinstance(item, Mapping) for item in [*existing, *desired])):
        return existing
    keys = {k for item in desired for k in item}
    projected = [{k: v for k, v in item.items() if k in keys} for item in existing]
    same = sorted(map(_canonical, projected)) == sorted(map(_canonical, desired))
    return list(desired) if same else projected


def _canonical(item: Mapping[str, Any]) -> str:
    return json.dumps(item, sort_keys=True, default=str)
