"""Delta rounds as the simulator keeps them: every token carries its round's
state (what was selected, the snapshot sequence, where the page stopped), so
a nextLink continues a round and a deltaLink starts the next one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from sim.answers import SimRequest, SimResponse, graph_error, parse_id_filter
from sim.store import SimTenant
from sim.tokens import BadToken, TokenCodec

DIRECTORY_TOKEN_LIFETIME = timedelta(days=7)


class Rounds:
    """Token state of every delta round of one tenant."""

    def __init__(self, tenant: SimTenant, codec: TokenCodec) -> None:
        self.tenant = tenant
        self.codec = codec
        self.token_epoch = 0  # tokens minted before this epoch are expired
        self.expiry_style = "410"

    def expire(self, style: str = "410") -> None:
        """Every token issued so far becomes invalid (410, syncStateNotFound or resyncRequired)."""
        self.token_epoch += 1
        self.expiry_style = style

    def state(self, request: SimRequest, scope: str,
              initial_select: Callable[[], list[str] | SimResponse]) -> dict[str, Any] | SimResponse:
        """The state of the round this request continues or starts."""
        skip = request.query.get("$skiptoken")
        delta = request.query.get("$deltatoken")
        if skip is None and delta is None:
            select = initial_select()
            if isinstance(select, SimResponse):
                return select
            state: dict[str, Any] = {"s": 0, "sel": select, "t": self.tenant.clock.time(), "e": self.token_epoch}
            if scope in ("users", "groups"):
                ids = parse_id_filter(request.query.get("$filter"))
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

    def next_page(self, request: SimRequest, scope: str, items: list[dict[str, Any]], state: dict[str, Any]) -> SimResponse:
        link = f"{request.base_url}/v1.0{_path_for(scope)}?{urlencode({'$skiptoken': self.codec.encode(state)})}"
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#{scope.split(':')[0]}", "@odata.nextLink": link, "value": items})

    def final_page(self, request: SimRequest, scope: str, items: list[dict[str, Any]], state: dict[str, Any]) -> SimResponse:
        final = {key: value for key, value in state.items() if key not in ("a", "g", "mo")}
        link = f"{request.base_url}/v1.0{_path_for(scope)}?{urlencode({'$deltatoken': self.codec.encode(final)})}"
        return SimResponse(200, {"@odata.context": f"{request.base_url}/v1.0/$metadata#{scope.split(':')[0]}", "@odata.deltaLink": link, "value": items})


def _path_for(scope: str) -> str:
    if scope in ("users", "groups"):
        return f"/{scope}/delta"
    kind, user, *rest = scope.split(":")
    if kind == "contacts":
        return f"/users/{quote(user)}/contactFolders/{quote(rest[0])}/contacts/delta"
    return f"/users/{quote(user)}/calendarView/delta"


def jitter(base: int, state: dict[str, Any]) -> int:
    """Server-chosen page sizes that vary from page to page, deterministically."""
    spread = max(1, base // 4)
    return max(1, base - zlib.crc32(str(state.get("a")).encode()) % spread)
