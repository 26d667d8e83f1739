"""Microsoft Graph v1.0 endpoints over a :class:`~sim.store.SimTenant`.

Transport-free: :func:`GraphApi.dispatch` maps one request (method, path
below ``/v1.0``, query, headers) to a status, headers and a JSON or binary
body, so the same code answers plain HTTP requests and ``$batch`` items.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sim import schema
from sim.store import DEFAULT_CONTACT_FOLDER, Collection, GroupMembers, Record, SimTenant
from sim.tokens import BadToken, TokenCodec

DIRECTORY_TOKEN_LIFETIME = timedelta(days=7)
MAX_FILTER_IDS = 50
LIST_MAX_TOP = 999  # GET /users: $top may be 1..999
PHOTO_SIZES = {"48x48", "64x64", "96x96", "120x120", "240x240", "360x360", "432x432", "504x504", "648x648"}

USER_DEFAULT_PROPERTIES = [
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
]
GROUP_DEFAULT_PROPERTIES = [
    "classification", "createdDateTime", "description", "displayName", "groupTypes", "mail",
    "mailEnabled", "mailNickname", "securityEnabled", "visibility",
]


@dataclass
class SimRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    base_url: str  # scheme://host:port, for nextLink and deltaLink


@dataclass
class SimResponse:
    status: int
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> SimResponse:
    """Graph's error shape: ``{"error": {"code", "message", "innerError"}}``."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": "2026-11-30T08:00:00", "request-id": "00000000-sim", "client-request-id": "00000000-sim"},
        }
    }
    return SimResponse(status, body, headers or {})


@dataclass
class SimSettings:
    """Server-side choices a real tenant makes for us."""

    user_page_size: int = 100
    group_page_size: int = 50
    member_slice: int = 20
    outlook_page_size: int = 10
    outlook_max_page_size: int = 1000
    forbidden_mailboxes: set[str] = field(default_factory=set)
    mailbox_purpose_as_object: bool = False
    list_max_top: int = LIST_MAX_TOP  # GET /users: the largest $top accepted


class GraphApi:
    def __init__(self, tenant: SimTenant, settings: SimSettings | None = None, codec: TokenCodec | None = None) -> None:
        self.tenant = tenant
        self.settings = settings or SimSettings()
        self.codec = codec or TokenCodec()
        self.token_epoch = 0  # tokens minted before this epoch are expired
        self.expiry_style = "410"
        self._routes: list[tuple[re.Pattern[str], Callable[..., SimResponse]]] = [
            (re.compile(r"/users"), self.list_users),
            (re.compile(r"/users/delta"), self.users_delta),
            (re.compile(r"/groups/delta"), self.groups_delta),
            (re.compile(r"/users/([^/]+)/contactFolders"), self.contact_folders),
            (re.compile(r"/users/([^/]+)/contactFolders/([^/]+)/contacts/delta"), self.contacts_delta),
            (re.compile(r"/users/([^/]+)/calendarView/delta"), self.events_delta),
            (re.compile(r"/users/([^/]+)/mailboxSettings"), self.mailbox_settings),
            (re.compile(r"/users/([^/]+)/photo"), self.photo_metadata),
            (re.compile(r"/users/([^/]+)/photo/\$value"), self.photo_value),
            (re.compile(r"/users/([^/]+)/photos/([^/]+)/\$value"), self.photo_sized_value),
            (re.compile(r"/users/([^/]+)"), self.get_user),
            (re.compile(r"/groups/([^/]+)/members"), self.group_members),
            (re.compile(r"/groups/([^/]+)/transitiveMembers"), self.group_transitive_members),
        ]

    def expire_delta_tokens(self, style: str = "410") -> None:
        """Every token issued so far becomes invalid (410, syncStateNotFound or resyncRequired)."""
        self.token_epoch += 1
        self.expiry_style = style

    def dispatch(self, request: SimRequest) -> SimResponse:
        if request.method != "GET":
            return graph_error(405, "Request_BadRequest", f"{request.method} is not supported here")
        for pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match:
                return handler(request, *match.groups())
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{request.path}'.")

    # --- users and groups ---

    def _find_user(self, id_or_upn: str) -> Record | None:
        record = self.tenant.users.live(id_or_upn)
        if record is not None:
            return record
        wanted = id_or_upn.lower()
        for candidate in self.tenant.users.records.values():
            if candidate.removed is None and str(candidate.data.get("userPrincipalName", "")).lower() == wanted:
                return candidate
        return None

    def get_user(self, request: SimRequest, user_id: str) -> SimResponse:
        record = self._find_user(user_id)
        if record is None:
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{user_id}' does not exist or one of its queried reference-property objects are not present.")
        select = _parse_select(request.query, "user", USER_DEFAULT_PROPERTIES)
        if isinstance(select, SimResponse):
            return select
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#users/$entity", **_render(record, "user", select, 0, False)})

    def list_users(self, request: SimRequest) -> SimResponse:
        """``GET /users?$select=...&$top=N``: live users only (no soft-deleted ones),
        pages of ``$top`` (default 100, at most 999) in id order."""
        select = _parse_select(request.query, "user", USER_DEFAULT_PROPERTIES)
        if isinstance(select, SimResponse):
            return select
        try:
            top = int(request.query.get("$top", "100"))
        except ValueError:
            return graph_error(400, "Request_BadRequest", "Invalid value for $top.")
        if not 1 <= top <= self.settings.list_max_top:
            return graph_error(400, "Request_BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 and {self.settings.list_max_top} inclusive.")
        after = None
        if "$skiptoken" in request.query:
            try:
                after = self.codec.decode(request.query["$skiptoken"]).get("after")
            except BadToken:
                return graph_error(400, "Request_BadRequest", "The $skiptoken is not valid.")
        items: list[dict[str, Any]] = []
        for record in self.tenant.users.after(after):
            if record.removed is not None:
                continue
            if len(items) == top:
                token = self.codec.encode({"after": items[-1]["id"]})
                query = urlencode({"$select": ",".join(select), "$top": str(top), "$skiptoken": token})
                return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#users",
                                         "@odata.nextLink": f"{request.base_url}/v1.0/users?{query}", "value": items})
            items.append(_render(record, "user", select, 0, False))
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#users", "value": items})

    def _latest(self, request: SimRequest, scope: str, initial_select: Callable[[], list[str] | SimResponse]) -> SimResponse | None:
        """``$deltaToken=latest``: no objects, a deltaLink from now on ("sync from now")."""
        token = request.query.get("$deltaToken", request.query.get("$deltatoken"))
        if token != "latest":
            return None
        query = {k: v for k, v in request.query.items() if k.lower() != "$deltatoken"}
        state = self._round_state(SimRequest(request.method, request.path, query, request.headers, request.base_url),
                                  scope, initial_select)
        if isinstance(state, SimResponse):
            return state
        return self._final_page(request, scope, [], {**state, "u": self.tenant.seq})

    def users_delta(self, request: SimRequest) -> SimResponse:
        def initial() -> list[str] | SimResponse:
            return _parse_select(request.query, "user", USER_DEFAULT_PROPERTIES)

        latest = self._latest(request, "users", initial)
        if latest is not None:
            return latest
        state = self._round_state(request, "users", initial)
        if isinstance(state, SimResponse):
            return state
        minimal = "return=minimal" in request.headers.get("prefer", "")
        select = state["sel"]
        since = state["s"]
        page_size = _jitter(self.settings.user_page_size, state)
        items: list[dict[str, Any]] = []
        last_id: str | None = state.get("a")
        for record in self._directory_records(self.tenant.users, state):
            last_id = record.id
            if record.seq <= since:
                continue
            if record.removed is not None:
                if since == 0:
                    continue
                items.append({"id": record.id, "@removed": {"reason": record.removed}})
            else:
                items.append(_render(record, "user", select, since, minimal))
            if len(items) >= page_size:
                break
        else:
            return self._final_page(request, "users", items, state)
        return self._next_page(request, "users", items, {**state, "a": last_id})

    def _directory_records(self, collection: Collection, state: dict[str, Any]) -> Iterator[Record]:
        ids = state.get("f")
        if ids is None:
            yield from collection.after(state.get("a"))
            return
        after = state.get("a")
        for id_ in sorted(ids):
            if after is not None and id_ <= after:
                continue
            record = collection.records.get(id_)
            if record is not None:
                yield record

    def groups_delta(self, request: SimRequest) -> SimResponse:
        state = self._round_state(request, "groups", lambda: _parse_select(request.query, "group", GROUP_DEFAULT_PROPERTIES, extra={"members"}))
        if isinstance(state, SimResponse):
            return state
        select: list[str] = state["sel"]
        with_members = "members" in select
        properties = [p for p in select if p != "members"]
        since = state["s"]
        page_size = _jitter(self.settings.group_page_size, state)
        items: list[dict[str, Any]] = []
        slice_size = self.settings.member_slice
        resume_group, member_offset = state.get("g"), state.get("mo", 0)
        last_id: str | None = state.get("a")
        records = self._directory_records(self.tenant.groups, state)
        if resume_group is not None:
            records = _chain([self.tenant.groups.records[resume_group]], records)
        for record in records:
            offset = member_offset if record.id == resume_group else 0
            if record.removed is not None:
                last_id = record.id
                if since > 0 and record.seq > since:
                    items.append({"id": record.id, "@removed": {"reason": record.removed}})
                continue
            member_changes = self._member_changes(record.id, since) if with_members else []
            if record.seq <= since and not member_changes:
                last_id = record.id
                continue
            item = _render(record, "group", properties, since, False)
            if with_members:
                item["members@delta"] = member_changes[offset : offset + slice_size]
            items.append(item)
            if with_members and offset + slice_size < len(member_changes):
                # A large group is repeated on the next page with the next slice.
                return self._next_page(request, "groups", items, {**state, "a": record.id, "g": record.id, "mo": offset + slice_size})
            last_id = record.id
            if len(items) >= page_size:
                break
        else:
            return self._final_page(request, "groups", items, state)
        return self._next_page(request, "groups", items, {**state, "a": last_id, "g": None, "mo": 0})

    def _member_changes(self, group_id: str, since: int) -> list[dict[str, Any]]:
        membership = self.tenant.members.get(group_id)
        if membership is None:
            return []
        changes: list[dict[str, Any]] = [
            {"@odata.type": self._member_type(member), "id": member}
            for member, seq in sorted(membership.current.items())
            if seq > since
        ]
        if since > 0:
            changes += [
                {"@odata.type": self._member_type(member), "id": member, "@removed": {"reason": "deleted"}}
                for member, seq in sorted(membership.removed.items())
                if seq > since
            ]
        return changes

    def _member_type(self, member: str) -> str:
        return "#microsoft.graph.group" if member in self.tenant.groups.records else "#microsoft.graph.user"

    def _transitive(self, group_id: str, seen: set[str]) -> set[str]:
        """Every member reachable through nested groups (groups included), cycles tolerated."""
        found: set[str] = set()
        for member in self.tenant.members.get(group_id, GroupMembers()).current:
            found.add(member)
            if member in self.tenant.groups.records and member not in seen:
                seen.add(member)
                found |= self._transitive(member, seen)
        return found

    def group_members(self, request: SimRequest, group_id: str, transitive: bool = False) -> SimResponse:
        if self.tenant.groups.live(group_id) is None:
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{group_id}' does not exist or one of its queried reference-property objects are not present.")
        if transitive:
            members = sorted(self._transitive(group_id, {group_id}))
        else:
            members = sorted(self.tenant.members[group_id].current)
        skip = int(request.query.get("$skiptoken", "0") or 0)
        page = members[skip : skip + 100]
        body: dict[str, Any] = {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#directoryObjects",
            "value": [{"@odata.type": self._member_type(member), "id": member} for member in page],
        }
        if skip + 100 < len(members):
            segment = "transitiveMembers" if transitive else "members"
            body["@odata.nextLink"] = f"{request.base_url}/v1.0/groups/{group_id}/{segment}?$skiptoken={skip + 100}"
        return SimResponse(200, body)

    def group_transitive_members(self, request: SimRequest, group_id: str) -> SimResponse:
        return self.group_members(request, group_id, transitive=True)

    # --- mailboxes ---

    def _mailbox(self, user_id: str) -> SimResponse | None:
        """An error response if the caller may not read this user's mailbox."""
        record = self._find_user(user_id)
        if record is None:
            return graph_error(404, "ErrorInvalidUser", f"The requested user '{user_id}' is invalid.")
        if record.id in self.settings.forbidden_mailboxes:
            return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        if record.id not in self.tenant.mailbox_purpose:
            return graph_error(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
        return None

    def contact_folders(self, request: SimRequest, user_id: str) -> SimResponse:
        denied = self._mailbox(user_id)
        if denied is not None:
            return denied
        folders = self.tenant.folders[user_id]
        return SimResponse(200, {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users('{user_id}')/contactFolders",
            "value": [{"id": r.id, **r.data} for r in folders.after(None) if r.removed is None],
        })

    def contacts_delta(self, request: SimRequest, user_id: str, folder_id: str) -> SimResponse:
        denied = self._mailbox(user_id)
        if denied is not None:
            return denied
        collection = self.tenant.contacts.get((user_id, folder_id))
        folder_gone = folder_id != DEFAULT_CONTACT_FOLDER and self.tenant.folders[user_id].live(folder_id) is None
        if collection is None or folder_gone:
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        scope = f"contacts:{user_id}:{folder_id}"
        state = self._round_state(request, scope, lambda: _parse_select(request.query, "contact", None))
        if isinstance(state, SimResponse):
            return state
        return self._outlook_page(request, scope, collection, state, lambda r: _render(r, "contact", state["sel"], 0, False), "#microsoft.graph.contact")

    def events_delta(self, request: SimRequest, user_id: str) -> SimResponse:
        denied = self._mailbox(user_id)
        if denied is not None:
            return denied
        scope = f"events:{user_id}"

        def initial() -> list[str] | SimResponse:
            for unsupported in ("$select", "$filter", "$orderby", "$search", "$expand"):
                if unsupported in request.query:
                    return graph_error(400, "ErrorInvalidUrlQuery", f"The query parameter '{unsupported}' is not supported with change tracking.")
            return []

        state = self._round_state(request, scope, initial)
        if isinstance(state, SimResponse):
            return state
        if "w" not in state:
            window = _parse_window(request.query)
            if isinstance(window, SimResponse):
                return window
            state["w"] = window
        zone = _prefer_timezone(request.headers.get("prefer", ""))
        start, end = (datetime.fromisoformat(value) for value in state["w"])
        collection = self.tenant.events[user_id]

        def render(record: Record) -> list[dict[str, Any]]:
            if "recurrence" in record.data:
                return [_render_event(occurrence, zone) for occurrence in _occurrences(record, start, end)]
            event_start, event_end = _event_bounds(record.data)
            if not (event_start < end and event_end > start):
                return []  # outside the window: reported as removed
            return [_render_event(record, zone)]

        return self._events_page(request, scope, collection, state, render)

    def _events_page(
        self,
        request: SimRequest,
        scope: str,
        collection: Collection,
        state: dict[str, Any],
        render: Callable[[Record], list[dict[str, Any]]],
    ) -> SimResponse:
        """calendarView delta: a series master stands for its occurrences in the
        window (all on one page); a removed or moved event is ``@removed``."""
        since = state["s"]
        page_size = self._outlook_page_size(request)
        items: list[dict[str, Any]] = []
        last_id: str | None = state.get("a")
        window = [datetime.fromisoformat(value) for value in state["w"]]
        for record in collection.after(state.get("a")):
            last_id = record.id
            if record.seq <= since:
                continue
            rendered = [] if record.removed is not None else render(record)
            if rendered:
                items += [{"@odata.type": "#microsoft.graph.event", **item} for item in rendered]
            elif since > 0:
                ids = [o.id for o in _occurrences(record, *window)] if "recurrence" in record.data else [record.id]
                items += [{"@odata.type": "#microsoft.graph.event", "id": i, "@removed": {"reason": "deleted"}} for i in ids]
            if len(items) >= page_size:
                break
        else:
            return self._final_page(request, scope, items, state)
        return self._next_page(request, scope, items, {**state, "a": last_id})

    def _outlook_page_size(self, request: SimRequest) -> int:
        """Outlook's default page size, or ``Prefer: odata.maxpagesize`` within its cap."""
        match = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
        if match:
            return max(1, min(int(match.group(1)), self.settings.outlook_max_page_size))
        return self.settings.outlook_page_size

    def _outlook_page(
        self,
        request: SimRequest,
        scope: str,
        collection: Collection,
        state: dict[str, Any],
        render: Callable[[Record], dict[str, Any] | None],
        odata_type: str,
    ) -> SimResponse:
        since = state["s"]
        page_size = self._outlook_page_size(request)
        items: list[dict[str, Any]] = []
        last_id: str | None = state.get("a")
        for record in collection.after(state.get("a")):
            last_id = record.id
            if record.seq <= since:
                continue
            rendered = None if record.removed is not None else render(record)
            if rendered is None:
                if since == 0:
                    continue
                items.append({"@odata.type": odata_type, "id": record.id, "@removed": {"reason": "deleted"}})
            else:
                items.append({"@odata.type": odata_type, **rendered})
            if len(items) >= page_size:
                break
        else:
            return self._final_page(request, scope, items, state)
        return self._next_page(request, scope, items, {**state, "a": last_id})

    def mailbox_settings(self, request: SimRequest, user_id: str) -> SimResponse:
        denied = self._mailbox(user_id)
        if denied is not None:
            return denied
        record = self._find_user(user_id)
        assert record is not None
        purpose = self.tenant.mailbox_purpose[record.id]
        return SimResponse(200, {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users('{record.id}')/mailboxSettings",
            "timeZone": "UTC",
            "dateFormat": "yyyy-MM-dd",
            "timeFormat": "HH:mm",
            "userPurpose": {"value": purpose} if self.settings.mailbox_purpose_as_object else purpose,
        })

    # --- photos ---

    def _photo(self, user_id: str) -> tuple[str, Any] | SimResponse:
        record = self._find_user(user_id)
        if record is None:
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{user_id}' does not exist.")
        photo = self.tenant.photos.get(record.id)
        if photo is None:
            return graph_error(404, "ImageNotFound", "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown.")
        return record.id, photo

    def photo_metadata(self, request: SimRequest, user_id: str) -> SimResponse:
        found = self._photo(user_id)
        if isinstance(found, SimResponse):
            return found
        id_, photo = found
        return SimResponse(200, {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users('{id_}')/photo/$entity",
            "@odata.mediaContentType": "image/jpeg",
            "@odata.mediaEtag": photo.etag,
            "id": f"{photo.width}X{photo.height}",
            "width": photo.width,
            "height": photo.height,
        })

    def photo_value(self, request: SimRequest, user_id: str) -> SimResponse:
        found = self._photo(user_id)
        if isinstance(found, SimResponse):
            return found
        return SimResponse(200, found[1].content, {"Content-Type": "image/jpeg", "ETag": found[1].etag})

    def photo_sized_value(self, request: SimRequest, user_id: str, size: str) -> SimResponse:
        if size.lower() not in PHOTO_SIZES:
            return graph_error(404, "ImageNotFound", f"The photo size {size} is not available.")
        return self.photo_value(request, user_id)

    # --- delta rounds ---

    def _round_state(
        self,
        request: SimRequest,
        scope: str,
        initial_select: Callable[[], list[str] | SimResponse],
    ) -> dict[str, Any] | SimResponse:
        """The state of the round this request continues or starts."""
        skip = request.query.get("$skiptoken")
        delta = request.query.get("$deltatoken")
        if skip is None and delta is None:
            select = initial_select()
            if isinstance(select, SimResponse):
                return select
            state: dict[str, Any] = {"s": 0, "sel": select, "t": self.tenant.clock.time(), "e": self.token_epoch}
            if scope in ("users", "groups"):
                ids = _parse_id_filter(request.query.get("$filter"))
                if isinstance(ids, SimResponse):
                    return ids
                state["f"] = ids
            state["k"] = scope
            state["u"] = self.tenant.seq
            return state
        try:
            token = self.codec.decode(skip if skip is not None else delta or "")
        except BadToken:
            return graph_error(400, "syncStateNotFound", "The sync state is not valid: the token could not be read.")
        if token.get("k") != scope:
            return graph_error(400, "syncStateNotFound", "The token belongs to another resource.")
        if token.get("e", 0) < self.token_epoch:
            return self._expired(request, scope)
        if scope in ("users", "groups") and self.tenant.clock.time() - token["t"] > DIRECTORY_TOKEN_LIFETIME.total_seconds():
            return self._expired(request, scope)
        if delta is not None:
            # A deltaLink starts a new round of changes after the old round's snapshot.
            return {**token, "s": token["u"], "u": self.tenant.seq, "a": None, "g": None, "mo": 0, "t": self.tenant.clock.time()}
        return token

    def _expired(self, request: SimRequest, scope: str) -> SimResponse:
        if self.expiry_style == "410":
            fresh = f"{request.base_url}/v1.0/{'users' if scope == 'users' else 'groups'}/delta"
            headers = {"Location": fresh} if scope in ("users", "groups") else {}
            return graph_error(410, "resyncRequired", "The delta token has expired; a full resynchronization is required.", headers)
        return graph_error(400, self.expiry_style, "The sync state generation is no longer valid.")

    def _path_for(self, scope: str) -> str:
        if scope in ("users", "groups"):
            return f"/{scope}/delta"
        kind, user, *rest = scope.split(":")
        if kind == "contacts":
            return f"/users/{quote(user)}/contactFolders/{quote(rest[0])}/contacts/delta"
        return f"/users/{quote(user)}/calendarView/delta"

    def _next_page(self, request: SimRequest, scope: str, items: list[dict[str, Any]], state: dict[str, Any]) -> SimResponse:
        link = f"{request.base_url}/v1.0{self._path_for(scope)}?{urlencode({'$skiptoken': self.codec.encode(state)})}"
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#{scope.split(':')[0]}", "@odata.nextLink": link, "value": items})

    def _final_page(self, request: SimRequest, scope: str, items: list[dict[str, Any]], state: dict[str, Any]) -> SimResponse:
        final = {key: value for key, value in state.items() if key not in ("a", "g", "mo")}
        link = f"{request.base_url}/v1.0{self._path_for(scope)}?{urlencode({'$deltatoken': self.codec.encode(final)})}"
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#{scope.split(':')[0]}", "@odata.deltaLink": link, "value": items})


# --- rendering helpers ---


def _render(record: Record, type_name: str, select: list[str] | None, since: int, minimal: bool) -> dict[str, Any]:
    """The record as Graph shows it: selected properties, null/[] when unset."""
    out: dict[str, Any] = {"id": record.id}
    names = select if select is not None else [p for p in record.data if p in schema.properties(type_name)]
    for prop in names:
        if prop == "id":
            continue
        if minimal and since > 0 and record.prop_seq.get(prop, 0) <= since:
            continue
        value = record.data.get(prop)
        out[prop] = schema.empty_value(type_name, prop) if value is None else value
    return out


def _parse_select(
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


def _parse_id_filter(raw: str | None) -> list[str] | None | SimResponse:
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


def _parse_window(query: dict[str, str]) -> list[str] | SimResponse:
    try:
        start = _parse_instant(query["startDateTime"])
        end = _parse_instant(query["endDateTime"])
    except (KeyError, ValueError):
        return graph_error(400, "ErrorInvalidParameter", "This request requires a time window specified by startDateTime and endDateTime.")
    return [start.isoformat(), end.isoformat()]


def _parse_instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _event_bounds(data: dict[str, Any]) -> tuple[datetime, datetime]:
    def instant(part: dict[str, str]) -> datetime:
        naive = datetime.fromisoformat(part["dateTime"][:19])
        return naive.replace(tzinfo=_zone(part.get("timeZone", "UTC"))).astimezone(UTC)

    return instant(data["start"]), instant(data["end"])


def _prefer_timezone(prefer: str) -> str:
    match = re.search(r'outlook\.timezone="([^"]+)"', prefer)
    return match.group(1) if match else "UTC"


def _render_event(record: Record, zone_name: str) -> dict[str, Any]:
    """Events come back in UTC, or in the zone asked for with ``Prefer``;
    all-day events keep their own midnight-to-midnight in their own zone."""
    out: dict[str, Any] = {"id": record.id}
    zone = _zone(zone_name)
    start, end = _event_bounds(record.data)
    for key, value in record.data.items():
        if key != "recurrence":
            out[key] = value
    if record.data.get("isAllDay"):
        return out
    out["start"] = {"dateTime": start.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone_name}
    out["end"] = {"dateTime": end.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone_name}
    return out


WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MAX_OCCURRENCES = 1000


def _occurrences(master: Record, window_start: datetime, window_end: datetime) -> list[Record]:
    """The occurrences of a daily or weekly series that overlap the window,
    expanded in the series' own time zone (so DST keeps the local time)."""
    data = master.data
    pattern, range_ = data["recurrence"]["pattern"], data["recurrence"]["range"]
    zone = _zone(data["start"].get("timeZone", "UTC"))
    first = datetime.fromisoformat(data["start"]["dateTime"][:19])
    length = datetime.fromisoformat(data["end"]["dateTime"][:19]) - first
    interval = int(pattern.get("interval", 1))
    weekdays = {WEEKDAYS.index(d) for d in pattern.get("daysOfWeek", [])} or {first.weekday()}
    last_date = datetime.fromisoformat(range_["endDate"]).date() if range_.get("type") == "endDate" else None
    limit = int(range_.get("numberOfOccurrences", MAX_OCCURRENCES)) if range_.get("type") == "numbered" else MAX_OCCURRENCES
    occurrences: list[Record] = []
    count = 0
    day = first.date()
    while count < limit and (last_date is None or day <= last_date):
        weeks = (day - first.date()).days // 7
        if pattern["type"] == "daily":
            due = (day - first.date()).days % interval == 0
        else:
            due = weeks % interval == 0 and day.weekday() in weekdays
        if due:
            count += 1
            local = datetime.combine(day, first.time())
            start = local.replace(tzinfo=zone).astimezone(UTC)
            end = (local + length).replace(tzinfo=zone).astimezone(UTC)
            if start >= window_end:
                break
            if end > window_start:
                occurrence = {k: v for k, v in data.items() if k != "recurrence"}
                occurrence.update(
                    type="occurrence", seriesMasterId=master.id,
                    start={"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": data["start"]["timeZone"]},
                    end={"dateTime": (local + length).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": data["end"]["timeZone"]},
                )
                occurrences.append(Record(f"{master.id}.{day:%Y%m%d}", occurrence, master.seq, {}))
        day = day.fromordinal(day.toordinal() + 1)
    return occurrences


def _jitter(base: int, state: dict[str, Any]) -> int:
    """Server-chosen page sizes that vary from page to page, deterministically."""
    spread = max(1, base // 4)
    return max(1, base - zlib.crc32(str(state.get("a")).encode()) % spread)


def _chain(first: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from first
    yield from rest
