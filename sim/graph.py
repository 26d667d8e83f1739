"""Microsoft Graph v1.0 endpoints over a :class:`~sim.store.SimTenant`.

Transport-free: :func:`GraphApi.dispatch` maps one request (method, path
below ``/v1.0``, query, headers) to a status, headers and a JSON or binary
body, so the same code answers plain HTTP requests and ``$batch`` items.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

from sim.answers import (
    LIST_MAX_TOP,
    SimRequest,
    SimResponse,
    SimSettings,
    graph_error,
    parse_select,
    render,
)
from sim.outlook import OutlookApi
from sim.presence import PresenceApi
from sim.rounds import Rounds, jitter
from sim.store import Collection, GroupMembers, Record, SimTenant
from sim.tokens import BadToken, TokenCodec

__all__ = ["GraphApi", "SimRequest", "SimResponse", "SimSettings", "graph_error", "LIST_MAX_TOP"]

USER_DEFAULT_PROPERTIES = [
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
]
GROUP_DEFAULT_PROPERTIES = [
    "classification", "createdDateTime", "description", "displayName", "groupTypes", "mail",
    "mailEnabled", "mailNickname", "securityEnabled", "visibility",
]


class GraphApi:
    def __init__(self, tenant: SimTenant, settings: SimSettings | None = None, codec: TokenCodec | None = None) -> None:
        self.tenant = tenant
        self.settings = settings or SimSettings()
        self.codec = codec or TokenCodec()
        self.rounds = Rounds(tenant, self.codec)
        self.outlook = OutlookApi(tenant, self.settings, self.rounds, self._find_user)
        self.presence = PresenceApi(tenant)
        routes: list[tuple[str, Callable[..., SimResponse]]] = [
            (r"/users", self.list_users),
            (r"/users/delta", self.users_delta),
            (r"/groups/delta", self.groups_delta),
            *self.outlook.routes(),
            (r"/users/([^/]+)", self.get_user),
            (r"/groups/([^/]+)/members", self.group_members),
            (r"/groups/([^/]+)/transitiveMembers", self.group_transitive_members),
        ]
        self._routes = [(re.compile(pattern), handler) for pattern, handler in routes]

    def expire_delta_tokens(self, style: str = "410") -> None:
        """Every token issued so far becomes invalid (410, syncStateNotFound or resyncRequired)."""
        self.rounds.expire(style)

    def dispatch(self, request: SimRequest) -> SimResponse:
        if request.method == "POST" and request.path == "/communications/getPresencesByUserId":
            return self.presence.get_presences(request)
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
        select = parse_select(request.query, "user", USER_DEFAULT_PROPERTIES)
        if isinstance(select, SimResponse):
            return select
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#users/$entity", **render(record, "user", select, 0, False)})

    def list_users(self, request: SimRequest) -> SimResponse:
        """``GET /users?$select=...&$top=N``: live users only (no soft-deleted ones),
        pages of ``$top`` (default 100, at most 999) in id order."""
        select = parse_select(request.query, "user", USER_DEFAULT_PROPERTIES)
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
            items.append(render(record, "user", select, 0, False))
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#users", "value": items})

    def _latest(self, request: SimRequest, scope: str, initial_select: Callable[[], list[str] | SimResponse]) -> SimResponse | None:
        """``$deltaToken=latest``: no objects, a deltaLink from now on ("sync from now")."""
        token = request.query.get("$deltaToken", request.query.get("$deltatoken"))
        if token != "latest":
            return None
        query = {k: v for k, v in request.query.items() if k.lower() != "$deltatoken"}
        state = self.rounds.state(SimRequest(request.method, request.path, query, request.headers, request.base_url),
                                  scope, initial_select)
        if isinstance(state, SimResponse):
            return state
        return self.rounds.final_page(request, scope, [], {**state, "u": self.tenant.seq})

    def users_delta(self, request: SimRequest) -> SimResponse:
        def initial() -> list[str] | SimResponse:
            return parse_select(request.query, "user", USER_DEFAULT_PROPERTIES)

        latest = self._latest(request, "users", initial)
        if latest is not None:
            return latest
        state = self.rounds.state(request, "users", initial)
        if isinstance(state, SimResponse):
            return state
        minimal = "return=minimal" in request.headers.get("prefer", "")
        select = state["sel"]
        since = state["s"]
        page_size = jitter(self.settings.user_page_size, state)
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
                items.append(render(record, "user", select, since, minimal, omit_unset=True))
            if len(items) >= page_size:
                break
        else:
            return self.rounds.final_page(request, "users", items, state)
        return self.rounds.next_page(request, "users", items, {**state, "a": last_id})

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
        state = self.rounds.state(request, "groups", lambda: parse_select(request.query, "group", GROUP_DEFAULT_PROPERTIES, extra={"members"}))
        if isinstance(state, SimResponse):
            return state
        select: list[str] = state["sel"]
        with_members = "members" in select
        properties = [p for p in select if p != "members"]
        since = state["s"]
        page_size = jitter(self.settings.group_page_size, state)
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
            item = render(record, "group", properties, since, False, omit_unset=True)
            if with_members:
                item["members@delta"] = member_changes[offset : offset + slice_size]
            items.append(item)
            if with_members and offset + slice_size < len(member_changes):
                # A large group is repeated on the next page with the next slice.
                return self.rounds.next_page(request, "groups", items, {**state, "a": record.id, "g": record.id, "mo": offset + slice_size})
            last_id = record.id
            if len(items) >= page_size:
                break
        else:
            return self.rounds.final_page(request, "groups", items, state)
        return self.rounds.next_page(request, "groups", items, {**state, "a": last_id, "g": None, "mo": 0})

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



def _chain(first: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from first
    yield from rest
