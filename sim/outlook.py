"""The Outlook side of the simulator: contact folders and contacts, the
calendar view, mailbox settings and photos, each answering as Exchange Online
does behind Graph (pages of 10, delegated 403s, the China cloud's gaps).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from sim.answers import SimRequest, SimResponse, SimSettings, graph_error, parse_select, render
from sim.calendar import event_bounds, occurrences, parse_window, prefer_timezone, render_event
from sim.rounds import Rounds
from sim.store import DEFAULT_CONTACT_FOLDER, Collection, Record, SimTenant

PHOTO_SIZES = {"48x48", "64x64", "96x96", "120x120", "240x240", "360x360", "432x432", "504x504", "648x648"}
OUTLOOK_MAX_TOP = 1000


class OutlookApi:
    def __init__(self, tenant: SimTenant, settings: SimSettings, rounds: Rounds,
                 find_user: Callable[[str], Record | None]) -> None:
        self.tenant = tenant
        self.settings = settings
        self.rounds = rounds
        self.find_user = find_user

    def routes(self) -> list[tuple[str, Callable[..., SimResponse]]]:
        return [
            (r"/users/([^/]+)/contactFolders", self.contact_folders),
            (r"/users/([^/]+)/contactFolders/([^/]+)/childFolders", self.child_folders),
            (r"/users/([^/]+)/contactFolders/([^/]+)/contacts", self.list_contacts),
            (r"/users/([^/]+)/contactFolders/([^/]+)/contacts/delta", self.contacts_delta),
            (r"/users/([^/]+)/calendarView/delta", self.events_delta),
            (r"/users/([^/]+)/mailboxSettings", self.mailbox_settings),
            (r"/users/([^/]+)/photo", self.photo_metadata),
            (r"/users/([^/]+)/photo/\$value", self.photo_value),
            (r"/users/([^/]+)/photos/([^/]+)/\$value", self.photo_sized_value),
        ]

    # --- mailbox access ---

    def _mailbox(self, user_id: str, shareable: bool = True) -> SimResponse | None:
        """An error response if the caller may not read this user's mailbox.

        Delegated mode reads the signed-in user's own mailbox; another one's
        contacts and calendar only when shared with them (``shareable``), its
        mailboxSettings never (https://learn.microsoft.com/en-us/graph/permissions-reference,
        Contacts.Read.Shared / Calendars.Read.Shared; no MailboxSettings.Read.Shared exists)."""
        record = self.find_user(user_id)
        if record is None:
            return graph_error(404, "ErrorInvalidUser", f"The requested user '{user_id}' is invalid.")
        denied = record.id in self.settings.forbidden_mailboxes
        delegate = self.settings.signed_in_user
        if delegate is not None and record.id != delegate:
            denied = denied or not shareable or record.id not in self.settings.shared_with_delegate
        if denied:
            return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        if record.id not in self.tenant.mailbox_purpose:
            return graph_error(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
        return None

    def page_size(self, request: SimRequest) -> int:
        """``$top``, else ``Prefer: odata.maxpagesize``, else Outlook's 10
        (https://learn.microsoft.com/en-us/graph/paging)."""
        top = request.query.get("$top")
        if top is not None and top.isdigit():
            return max(1, min(int(top), OUTLOOK_MAX_TOP))
        match = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
        if match:
            return max(1, min(int(match.group(1)), self.settings.outlook_max_page_size))
        return self.settings.outlook_page_size

    def _collection_page(self, request: SimRequest, path: str, items: list[dict[str, Any]], context: str) -> SimResponse:
        """One page of a plain Outlook listing; the nextLink carries ``$skip``
        and the original query, as Outlook's do."""
        size = self.page_size(request)
        skip = int(request.query.get("$skip", "0") or 0)
        body: dict[str, Any] = {"@odata.context": f"{request.base_url}/v1.0/$metadata#{context}",
                                "value": items[skip : skip + size]}
        if skip + size < len(items):
            query = {k: v for k, v in request.query.items() if k != "$skip"}
            body["@odata.nextLink"] = f"{request.base_url}/v1.0{path}?{urlencode({**query, '$skip': str(skip + size)}, safe='$,')}"
        return SimResponse(200, body)

    # --- contact folders and contacts ---

    def _folders_under(self, user_id: str, parent: str) -> list[dict[str, Any]]:
        records: Iterator[Record] = self.tenant.folders[user_id].after(None)
        found = [{"id": r.id, **r.data} for r in records
                 if r.removed is None and r.data.get("parentFolderId") == parent]
        return found[::-1] if self.settings.folders_reversed else found

    def contact_folders(self, request: SimRequest, user_id: str) -> SimResponse:
        """The top-level folders under the default Contacts folder only; sub-folders
        come from ``childFolders`` (https://learn.microsoft.com/en-us/graph/api/user-list-contactfolders)."""
        denied = self._mailbox(user_id)
        if denied is not None:
            return denied
        select = parse_select(request.query, "contactFolder", None)
        if isinstance(select, SimResponse):
            return select
        folders = [_selected(f, select) for f in self._folders_under(user_id, f"root-{user_id}")]
        return self._collection_page(request, f"/users/{quote(user_id)}/contactFolders", folders,
                                     f"users('{user_id}')/contactFolders")

    def child_folders(self, request: SimRequest, user_id: str, folder_id: str) -> SimResponse:
        """https://learn.microsoft.com/en-us/graph/api/contactfolder-list-childfolders"""
        denied = self._mailbox(user_id)
        if denied is not None:
            return denied
        if self.tenant.folders[user_id].live(folder_id) is None:
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        select = parse_select(request.query, "contactFolder", None)
        if isinstance(select, SimResponse):
            return select
        folders = [_selected(f, select) for f in self._folders_under(user_id, folder_id)]
        return self._collection_page(request, f"/users/{quote(user_id)}/contactFolders/{quote(folder_id)}/childFolders",
                                     folders, f"users('{user_id}')/contactFolders('{folder_id}')/childFolders")

    def _contacts_of(self, user_id: str, folder_id: str) -> Collection | SimResponse:
        denied = self._mailbox(user_id)
        if denied is not None:
            return denied
        collection = self.tenant.contacts.get((user_id, folder_id))
        folder_gone = folder_id != DEFAULT_CONTACT_FOLDER and self.tenant.folders[user_id].live(folder_id) is None
        if collection is None or folder_gone:
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return collection

    def list_contacts(self, request: SimRequest, user_id: str, folder_id: str) -> SimResponse:
        """``GET .../contactFolders/{id}/contacts``: the folder's contacts, paged
        (https://learn.microsoft.com/en-us/graph/api/contactfolder-list-contacts)."""
        collection = self._contacts_of(user_id, folder_id)
        if isinstance(collection, SimResponse):
            return collection
        select = parse_select(request.query, "contact", None)
        if isinstance(select, SimResponse):
            return select
        items = [render(r, "contact", select, 0, False) for r in collection.after(None) if r.removed is None]
        return self._collection_page(request, f"/users/{quote(user_id)}/contactFolders/{quote(folder_id)}/contacts",
                                     items, f"users('{user_id}')/contactFolders('{folder_id}')/contacts")

    def contacts_delta(self, request: SimRequest, user_id: str, folder_id: str) -> SimResponse:
        if self.settings.china:  # 21Vianet's metadata has no delta function on contacts: an unknown segment
            return graph_error(400, "BadRequest", "Resource not found for the segment 'delta'.")
        collection = self._contacts_of(user_id, folder_id)
        if isinstance(collection, SimResponse):
            return collection
        scope = f"contacts:{user_id}:{folder_id}"
        state = self.rounds.state(request, scope, lambda: parse_select(request.query, "contact", None))
        if isinstance(state, SimResponse):
            return state
        return self._delta_page(request, scope, collection, state,
                                lambda r: render(r, "contact", state["sel"], 0, False, omit_unset=True),
                                "#microsoft.graph.contact")

    def _delta_page(self, request: SimRequest, scope: str, collection: Collection, state: dict[str, Any],
                    render_one: Callable[[Record], dict[str, Any] | None], odata_type: str) -> SimResponse:
        since = state["s"]
        page_size = self.page_size(request)
        items: list[dict[str, Any]] = []
        last_id: str | None = state.get("a")
        for record in collection.after(state.get("a")):
            last_id = record.id
            if record.seq <= since:
                continue
            rendered = None if record.removed is not None else render_one(record)
            if rendered is None:
                if since == 0:
                    continue
                items.append({"@odata.type": odata_type, "id": record.id, "@removed": {"reason": "deleted"}})
            else:
                items.append({"@odata.type": odata_type, **rendered})
            if len(items) >= page_size:
                break
        else:
            return self.rounds.final_page(request, scope, items, state)
        return self.rounds.next_page(request, scope, items, {**state, "a": last_id})

    # --- calendar ---

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

        state = self.rounds.state(request, scope, initial)
        if isinstance(state, SimResponse):
            return state
        if "w" not in state:
            window = parse_window(request.query)
            if isinstance(window, SimResponse):
                return window
            state["w"] = window
        zone = prefer_timezone(request.headers.get("prefer", ""))
        start, end = (datetime.fromisoformat(value) for value in state["w"])

        def render_all(record: Record) -> list[dict[str, Any]]:
            if "recurrence" in record.data:
                return [render_event(occurrence, zone) for occurrence in occurrences(record, start, end)]
            event_start, event_end = event_bounds(record.data)
            if not (event_start < end and event_end > start):
                return []  # outside the window: reported as removed
            return [render_event(record, zone)]

        return self._events_page(request, scope, self.tenant.events[user_id], state, render_all)

    def _events_page(self, request: SimRequest, scope: str, collection: Collection, state: dict[str, Any],
                     render_all: Callable[[Record], list[dict[str, Any]]]) -> SimResponse:
        """calendarView delta: a series master stands for its occurrences in the
        window (all on one page); a removed or moved event is ``@removed``."""
        since = state["s"]
        page_size = self.page_size(request)
        items: list[dict[str, Any]] = []
        last_id: str | None = state.get("a")
        window = [datetime.fromisoformat(value) for value in state["w"]]
        for record in collection.after(state.get("a")):
            last_id = record.id
            if record.seq <= since:
                continue
            rendered = [] if record.removed is not None else render_all(record)
            if rendered:
                items += [{"@odata.type": "#microsoft.graph.event", **item} for item in rendered]
            elif since > 0:
                ids = [o.id for o in occurrences(record, *window)] if "recurrence" in record.data else [record.id]
                items += [{"@odata.type": "#microsoft.graph.event", "id": i, "@removed": {"reason": "deleted"}} for i in ids]
            if len(items) >= page_size:
                break
        else:
            return self.rounds.final_page(request, scope, items, state)
        return self.rounds.next_page(request, scope, items, {**state, "a": last_id})

    # --- mailbox settings ---

    def mailbox_settings(self, request: SimRequest, user_id: str) -> SimResponse:
        """https://learn.microsoft.com/en-us/graph/api/user-get-mailboxsettings: in
        delegated mode only the signed-in user's own (see ``_mailbox``)."""
        denied = self._mailbox(user_id, shareable=False)
        if denied is not None:
            return denied
        record = self.find_user(user_id)
        assert record is not None
        purpose = self.tenant.mailbox_purpose[record.id]
        return SimResponse(200, {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users('{record.id}')/mailboxSettings",
            "timeZone": self.tenant.mailbox_time_zone.get(record.id, "UTC"),
            "dateFormat": "yyyy-MM-dd",
            "timeFormat": "HH:mm",
            "userPurpose": {"value": purpose} if self.settings.mailbox_purpose_as_object else purpose,
        })

    # --- photos ---

    def _photo(self, user_id: str) -> tuple[str, Any] | SimResponse:
        record = self.find_user(user_id)
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
        """A size larger than the uploaded photo answers 404 ("if a user uploads a
        504x504 photo, all but the 648x648 size are available":
        https://learn.microsoft.com/en-us/graph/api/profilephoto-get)."""
        if size.lower() not in PHOTO_SIZES:
            return graph_error(404, "ImageNotFound", f"The photo size {size} is not available.")
        found = self._photo(user_id)
        if isinstance(found, SimResponse):
            return found
        width = int(size.lower().split("x")[0])
        if width > found[1].width:
            return graph_error(404, "ImageNotFound", f"The photo size {size} is not available.")
        return self.photo_value(request, user_id)


def _selected(item: dict[str, Any], select: list[str]) -> dict[str, Any]:
    return {"id": item["id"], **{k: item.get(k) for k in select if k != "id"}}
