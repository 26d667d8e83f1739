"""The simulated tenant's data and its change history.

Every mutation takes the next value of one tenant-wide sequence number, and
each record remembers the sequence of its last change and of each property's
last change. A delta token is then just "changes after sequence S", which is
how the real service behaves from the outside: incremental rounds return only
what changed, removals carry a reason, and minimal responses carry only the
properties that changed.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.clock import FakeClock, SystemClock

Clock = FakeClock | SystemClock


@dataclass
class Record:
    """One Graph object with its change history."""

    id: str
    data: dict[str, Any]
    seq: int
    prop_seq: dict[str, int]
    removed: str | None = None  # None, "changed" (soft-deleted) or "deleted"


class Collection:
    """Records of one kind in one scope, kept in id order for stable paging."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self.records)

    def put(self, seq: int, id_: str, data: dict[str, Any]) -> Record:
        """Create the record, or change the given properties of it."""
        record = self.records.get(id_)
        if record is None:
            record = Record(id_, dict(data), seq, {key: seq for key in data})
            self.records[id_] = record
            bisect.insort(self._ids, id_)
            return record
        for key, value in data.items():
            if record.data.get(key, _MISSING) != value:
                record.data[key] = value
                record.prop_seq[key] = seq
        record.seq = seq
        return record

    def remove(self, seq: int, id_: str, reason: str) -> Record:
        record = self.records[id_]
        record.removed = reason
        record.seq = seq
        return record

    def restore(self, seq: int, id_: str) -> Record:
        record = self.records[id_]
        record.removed = None
        record.seq = seq
        for key in record.prop_seq:
            record.prop_seq[key] = seq  # a restored object comes back whole
        return record

    def live(self, id_: str) -> Record | None:
        record = self.records.get(id_)
        return record if record is not None and record.removed is None else None

    def after(self, after_id: str | None) -> Iterator[Record]:
        """Records in id order, starting after ``after_id``."""
        start = 0 if after_id is None else bisect.bisect_right(self._ids, after_id)
        for index in range(start, len(self._ids)):
            yield self.records[self._ids[index]]


_MISSING = object()


@dataclass
class Photo:
    content: bytes
    etag: str
    width: int = 96
    height: int = 96


@dataclass
class GroupMembers:
    """Membership with per-member change sequence, for ``members@delta``."""

    current: dict[str, int] = field(default_factory=dict)  # member id -> seq added
    removed: dict[str, int] = field(default_factory=dict)  # member id -> seq removed


DEFAULT_CONTACT_FOLDER = "contacts"


class SimTenant:
    """All data of one simulated Microsoft 365 tenant, and the mutation API."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or FakeClock()
        self.seq = 0
        self.users = Collection()
        self.groups = Collection()
        self.members: dict[str, GroupMembers] = {}
        self.folders: dict[str, Collection] = {}  # user id -> contact folders (not the default)
        self.contacts: dict[tuple[str, str], Collection] = {}  # (user id, folder id)
        self.events: dict[str, Collection] = {}  # user id -> events
        self.photos: dict[str, Photo] = {}
        self.mailbox_purpose: dict[str, str] = {}  # user id -> userPurpose; absent: no mailbox
        self.mailbox_time_zone: dict[str, str] = {}  # user id -> mailboxSettings.timeZone (default UTC)
        self.presences: dict[str, tuple[str, str]] = {}  # user id -> Teams (availability, activity)
        # Told (resource, changeType, object id) of every change, as Graph's change notifications are
        # (sim/subscriptions.py): "users", "groups", "users/{id}/contacts", "users/{id}/events".
        self.listeners: list[Callable[[str, str, str], None]] = []

    def _changed(self, resource: str, change_type: str, object_id: str) -> None:
        for listener in list(self.listeners):
            listener(resource, change_type, object_id)

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def timestamp(self) -> str:
        return _iso(self.clock.now())

    # --- users ---

    def add_user(self, id_: str, mailbox: str | None = "user", **properties: Any) -> Record:
        properties.setdefault("createdDateTime", self.timestamp())
        record = self.users.put(self._next(), id_, properties)
        self._changed("users", "updated", id_)  # creation comes as "updated" on /users (graph-facts)
        if mailbox is not None:
            self.mailbox_purpose[id_] = mailbox
            self.contacts.setdefault((id_, DEFAULT_CONTACT_FOLDER), Collection())
            self.folders.setdefault(id_, Collection())
            self.events.setdefault(id_, Collection())
        return record

    def change_user(self, id_: str, **properties: Any) -> Record:
        if self.users.live(id_) is None:
            raise KeyError(f"no live user {id_}")
        record = self.users.put(self._next(), id_, properties)
        self._changed("users", "updated", id_)
        return record

    def soft_delete_user(self, id_: str) -> None:
        self.users.remove(self._next(), id_, "changed")
        self._changed("users", "updated", id_)  # soft deletion is an update

    def restore_user(self, id_: str) -> None:
        self.users.restore(self._next(), id_)
        self._changed("users", "updated", id_)

    def hard_delete_user(self, id_: str) -> None:
        self.users.remove(self._next(), id_, "deleted")
        self._changed("users", "deleted", id_)
        for members in self.members.values():
            if id_ in members.current:
                del members.current[id_]
                members.removed[id_] = self.seq

    # --- groups ---

    def add_group(self, id_: str, members: list[str] | None = None, **properties: Any) -> Record:
        properties.setdefault("createdDateTime", self.timestamp())
        record = self.groups.put(self._next(), id_, properties)
        self.members[id_] = GroupMembers({m: self.seq for m in members or []})
        self._changed("groups", "updated", id_)
        return record

    def change_group(self, id_: str, **properties: Any) -> Record:
        record = self.groups.put(self._next(), id_, properties)
        self._changed("groups", "updated", id_)
        return record

    def add_member(self, group_id: str, user_id: str) -> None:
        seq = self._next()
        membership = self.members[group_id]
        membership.current[user_id] = seq
        membership.removed.pop(user_id, None)
        self._changed("groups", "updated", group_id)

    def remove_member(self, group_id: str, user_id: str) -> None:
        seq = self._next()
        membership = self.members[group_id]
        if membership.current.pop(user_id, None) is not None:
            membership.removed[user_id] = seq
        self._changed("groups", "updated", group_id)

    def delete_group(self, id_: str) -> None:
        self.groups.remove(self._next(), id_, "deleted")
        self._changed("groups", "deleted", id_)

    # --- contacts ---

    def add_folder(self, user_id: str, folder_id: str, display_name: str, parent: str | None = None) -> Record:
        """A contact folder, top-level or below ``parent`` (a sub-folder)."""
        record = self.folders[user_id].put(
            self._next(), folder_id, {"displayName": display_name, "parentFolderId": parent or f"root-{user_id}"}
        )
        self.contacts[(user_id, folder_id)] = Collection()
        return record

    def delete_folder(self, user_id: str, folder_id: str) -> None:
        self.folders[user_id].remove(self._next(), folder_id, "deleted")

    def put_contact(self, user_id: str, contact_id: str, folder_id: str = DEFAULT_CONTACT_FOLDER, **properties: Any) -> Record:
        collection = self.contacts[(user_id, folder_id)]
        now = self.timestamp()
        if contact_id not in collection.records:
            properties.setdefault("createdDateTime", now)
        properties["lastModifiedDateTime"] = now
        properties["parentFolderId"] = folder_id
        properties["changeKey"] = _change_key(contact_id, self.seq + 1)
        created = contact_id not in collection.records
        record = collection.put(self._next(), contact_id, properties)
        if folder_id == DEFAULT_CONTACT_FOLDER:  # /users/{id}/contacts is the default folder's (subscription docs)
            self._changed(f"users/{user_id}/contacts", "created" if created else "updated", contact_id)
        return record

    def delete_contact(self, user_id: str, contact_id: str, folder_id: str = DEFAULT_CONTACT_FOLDER) -> None:
        self.contacts[(user_id, folder_id)].remove(self._next(), contact_id, "deleted")
        if folder_id == DEFAULT_CONTACT_FOLDER:
            self._changed(f"users/{user_id}/contacts", "deleted", contact_id)

    # --- events ---

    def put_event(self, user_id: str, event_id: str, **properties: Any) -> Record:
        collection = self.events[user_id]
        now = self.timestamp()
        if event_id not in collection.records:
            properties.setdefault("createdDateTime", now)
        properties["lastModifiedDateTime"] = now
        properties["changeKey"] = _change_key(event_id, self.seq + 1)
        created = event_id not in collection.records
        record = collection.put(self._next(), event_id, properties)
        self._changed(f"users/{user_id}/events", "created" if created else "updated", event_id)
        return record

    def delete_event(self, user_id: str, event_id: str) -> None:
        self.events[user_id].remove(self._next(), event_id, "deleted")
        self._changed(f"users/{user_id}/events", "deleted", event_id)

    # --- photos (not part of users delta, exactly like Graph) ---

    def set_photo(self, user_id: str, content: bytes | None) -> None:
        if content is None:
            self.photos.pop(user_id, None)
        else:
            etag = hashlib.sha256(content).hexdigest()[:16]
            self.photos[user_id] = Photo(content, f'"{etag}"')

    def set_mailbox_purpose(self, user_id: str, purpose: str) -> None:
        self.mailbox_purpose[user_id] = purpose


def _change_key(id_: str, seq: int) -> str:
    return hashlib.sha1(f"{id_}:{seq}".encode()).hexdigest()[:20]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
