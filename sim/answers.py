"""What every simulated endpoint shares: the request and response shapes,
Graph's error body, the server-side settings, ``$select`` and rendering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sim import schema
from sim.store import Record

MAX_FILTER_IDS = 50
LIST_MAX_TOP = 999  # GET /users: $top may be 1..999


@dataclass
class SimRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    base_url: str  # scheme://host:port, for nextLink and deltaLink
    body: Any = None  # a POST's JSON body (getPresencesByUserId)


@dataclass
class SimResponse:
    status: int
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                inner_code: str | None = None) -> SimResponse:
    """Graph's error shape: ``{"error": {"code", "message", "innerError"}}``.

    The specific code of an error may sit in a nested ``innerError`` under a
    generic top-level one ("Clients should walk the innererror chain for the
    most specific code": https://learn.microsoft.com/en-us/graph/errors, the
    "Error resource type" and "Code property" sections)."""
    inner: dict[str, Any] = {"date": "2026-11-30T08:00:00", "request-id": "00000000-sim",
                             "client-request-id": "00000000-sim"}
    if inner_code is not None:
        inner["code"] = inner_code
    return SimResponse(status, {"error": {"code": code, "message": message, "innerError": inner}}, headers or {})


@dataclass
class SimSettings:
    """Server-side choices a real tenant makes for us."""

    user_page_size: int = 100
    group_page_size: int = 50
    member_slice: int = 20
    # Outlook collections (contacts, contact folders, events) page by 10 unless
    # `Prefer: odata.maxpagesize` or `$top` asks otherwise
    # (https://learn.microsoft.com/en-us/graph/paging; "In Outlook, the default
    # page size is 10": microsoftgraph/msgraph-sdk-powershell pull 1230).
    outlook_page_size: int = 10
    outlook_max_page_size: int = 1000
    forbidden_mailboxes: set[str] = field(default_factory=set)
    mailbox_purpose_as_object: bool = False
    list_max_top: int = LIST_MAX_TOP  # GET /users: the largest $top accepted
    # Delegated mode: the signed-in user. mailboxSettings of anyone else is 403
    # ErrorAccessDenied whatever was consented; contacts and calendars of others
    # need a share (``shared_with_delegate``) besides Contacts/Calendars.Read.Shared
    # (https://learn.microsoft.com/en-us/graph/api/user-get-mailboxsettings, and
    # the 403 reports on microsoftgraph/msgraph-sdk-dotnet and Graph Explorer).
    signed_in_user: str | None = None
    shared_with_delegate: set[str] = field(default_factory=set)
    # 21Vianet: its service metadata has no `delta` function on contacts (events
    # have one) (https://learn.microsoft.com/en-us/graph/deployments lists
    # per-cloud feature gaps; the China endpoint's $metadata lacks the function).
    china: bool = False
    # Listing order of contact folders: Graph promises none, pages may reorder.
    folders_reversed: bool = False


def render(record: Record, type_name: str, select: list[str] | None, since: int, minimal: bool,
           omit_unset: bool = False) -> dict[str, Any]:
    """The record as Graph shows it: selected properties, ``null``/``[]`` when cleared.

    ``omit_unset`` (delta answers): a property never set is left out, not sent
    as ``null``; one cleared later comes as ``null``
    (https://learn.microsoft.com/en-us/graph/delta-query-overview, "Resource
    representation in the delta query response")."""
    out: dict[str, Any] = {"id": record.id}
    names = select if select is not None else [p for p in record.data if p in schema.properties(type_name)]
    for prop in names:
        if prop == "id":
            continue
        if minimal and since > 0 and record.prop_seq.get(prop, 0) <= since:
            continue
        if omit_unset and prop not in record.data:
            continue
        value = record.data.get(prop)
        out[prop] = schema.empty_value(type_name, prop) if value is None else value
    return out


def parse_select(
    query: dict[str, str], type_name: str, default: list[str] | None, extra: set[str] | None = None
) -> list[str] | SimResponse:
    raw = query.get("$select")
    if raw is None:
        return default if default is not None else list(schema.properties(type_name))
    known = schema.properties(type_name)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for name in names:
        if name not in known and name not in (extra or set()):
            return graph_error(400, "Request_BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.")
    return names


_ID_CLAUSE = re.compile(r"\s*id\s+eq\s+'([^']+)'\s*")


def parse_id_filter(raw: str | None) -> list[str] | None | SimResponse:
    if raw is None:
        return None
    clauses = re.split(r"\s+or\s+", raw.strip())
    ids = []
    for clause in clauses:
        match = _ID_CLAUSE.fullmatch(clause)
        if not match:
            return graph_error(400, "Request_UnsupportedQuery", "Unsupported query: only \"id eq '...'\" clauses joined by 'or' are supported with delta.")
        ids.append(match.group(1))
    if len(ids) > MAX_FILTER_IDS:
        return graph_error(400, "Request_UnsupportedQuery", f"At most {MAX_FILTER_IDS} ids can be filtered in one delta request.")
    return ids
