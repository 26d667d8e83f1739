"""Graph objects as typed records: what a read keeps of each user, group,
contact and event, checked at the edge so nothing Graph sends can break a
later step (a hash, a mapping, a write) or reach the PBX.

Only the properties the daemon uses are parsed; the rest is dropped. A value
is normalized where its meaning is clear: a lone UTF-16 surrogate becomes
U+FFFD (UTF-8 cannot carry it), NUL characters are removed, a number where a
string is expected becomes its text, a single value where a list is expected
becomes a one-item list. Anything else (a number for ``emailAddresses``, a
string longer than :data:`MAX_TEXT`, an object without an id) rejects the
object, with a reason the operator can act on.

Delta items may be partial: a property Graph did not send stays unset, so a
merge keeps the stored value (``model_dump(exclude_unset=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

# Above every length Graph allows for the properties kept (displayName 256, UPN 113, mail 254,
# phone numbers 64): a real value is never cut, and a runaway one never reaches the state or the PBX.
MAX_TEXT = 1024
MAX_ITEMS = 100  # Graph's lists kept here (phones, addresses) hold a handful
MAX_ID = 1024  # user and group ids are GUIDs; Outlook ids about 150 characters

RecordKind = Literal["user", "group", "contact", "event"]


def clean_text(value: str) -> str:
    """``value`` without NUL characters and with every lone surrogate replaced by U+FFFD."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate; pairs (from JSON's \\ud83d\\ude00) are joined
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value.replace("\0", "") if "\0" in value else value


def _text(value: Any) -> str | None:
    if type(value) is str:  # nearly always: a few calls per property of every object read
        text = clean_text(value)
    elif value is None:
        return None
    elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected text, got {type(value).__name__}")
    else:
        text = clean_text(value) if isinstance(value, str) else str(value)
    if len(text) > MAX_TEXT:
        raise ValueError(f"text of {len(text)} characters, more than {MAX_TEXT}")
    return text


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{len(items)} items, more than {MAX_ITEMS}")
    return items


def _texts(value: Any) -> list[str]:
    return [text for text in (_text(item) for item in _list(value)) if text is not None]


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"expected true or false, got {type(value).__name__}")


def _id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID or clean_text(value) != value:
        raise ValueError("not an id")
    return value


def _date_time(value: Any) -> str:
    """An event's local date and time as Graph writes it (``2026-11-30T08:00:00.0000000``):
    checked here, so one unreadable event is refused alone instead of failing its mailbox's
    whole busy list when the windows are computed."""
    text = _text(value)
    if text is None:
        raise ValueError("no date and time")
    try:
        datetime.fromisoformat(text[:19])
        datetime.fromisoformat(text[:10])  # an all-day event's day
    except ValueError:
        raise ValueError(f"not a date and time: {text[:40]!r}") from None
    return text


def _addresses(value: Any) -> list[Any]:
    """Contact e-mail addresses: objects, or a bare address as its own object."""
    items = _list(value)
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"address": item}
        if not isinstance(item, Mapping):
            raise ValueError(f"expected e-mail address objects, got {type(item).__name__}")
        out.append(item)
    return out


Text = Annotated[str | None, BeforeValidator(_text)]
Texts = Annotated[list[str], BeforeValidator(_texts)]
Flag = Annotated[bool | None, BeforeValidator(_flag)]
Id = Annotated[str, BeforeValidator(_id)]


class Record(BaseModel):
    # defer_build: a run that reads nothing (an empty delta) does not build the validators
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    id: Id


class UserRecord(Record):
    displayName: Text = None
    givenName: Text = None
    surname: Text = None
    userPrincipalName: Text = None
    mail: Text = None
    jobTitle: Text = None
    department: Text = None
    businessPhones: Texts = []
    mobilePhone: Text = None
    accountEnabled: Flag = None
    userType: Text = None
    createdDateTime: Text = None


class GroupRecord(Record):
    displayName: Text = None
    mail: Text = None


class EmailAddress(BaseModel):
    # defer_build: a run that reads nothing (an empty delta) does not build the validators
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    address: Text = None
    name: Text = None


class ContactRecord(Record):
    displayName: Text = None
    givenName: Text = None
    surname: Text = None
    companyName: Text = None
    jobTitle: Text = None
    businessPhones: Texts = []
    homePhones: Texts = []
    mobilePhone: Text = None
    emailAddresses: Annotated[list[EmailAddress], BeforeValidator(_addresses)] = []


class DateTimeZone(BaseModel):
    # defer_build: a run that reads nothing (an empty delta) does not build the validators
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    dateTime: Annotated[str, BeforeValidator(_date_time)]
    timeZone: Text = None


class EventRecord(Record):
    """An event is read whole (calendarView delta sends every property), so a missing
    start or end refuses it rather than leaving a window that cannot be placed."""

    start: DateTimeZone
    end: DateTimeZone
    originalStartTimeZone: Text = None
    originalEndTimeZone: Text = None
    showAs: Text = None
    isCancelled: Flag = None
    isAllDay: Flag = None


MODELS: dict[RecordKind, type[Record]] = {"user": UserRecord, "group": GroupRecord, "contact": ContactRecord,
                                          "event": EventRecord}


_FIELDS: dict[RecordKind, frozenset[str]] = {kind: frozenset(model.model_fields) for kind, model in MODELS.items()}


@dataclass(frozen=True)
class Rejected:
    """An object a read could not keep: its id (None when it had no usable one) and why."""

    kind: RecordKind
    id: str | None
    label: str  # who, for the report: a name or UPN when one was readable
    reason: str


def _label(item: Mapping[str, Any], id_: str | None) -> str:
    for key in ("userPrincipalName", "displayName"):
        value = item.get(key)
        if isinstance(value, str) and value and len(value) <= MAX_TEXT:
            return clean_text(value)
    return id_ or "an object without an id"


def _reason(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the object"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" + (f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else "")


def parse(kind: RecordKind, item: Any) -> dict[str, Any] | Rejected:
    """One Graph item as it may be stored: the kept properties it carried, normalized; a removal
    as ``{"id", "@removed"}``; keys starting with ``_`` (what the daemon adds: a contact's folder)
    kept as they are. Anything that cannot be kept is :class:`Rejected`."""
    if not isinstance(item, Mapping):
        return Rejected(kind, None, "an object", f"expected an object, got {type(item).__name__}")
    try:
        id_ = _id(item.get("id"))
    except ValueError:
        return Rejected(kind, None, _label(item, None), "no usable id")
    removed = item.get("@removed")
    if removed is not None:
        reason = removed.get("reason") if isinstance(removed, Mapping) else None
        return {"id": id_, "@removed": {"reason": reason if reason in ("changed", "deleted") else "deleted"}}
    try:
        record = MODELS[kind].model_validate(item)
    except ValidationError as error:
        return Rejected(kind, id_, _label(item, id_), _reason(error))
    kept = record.model_dump(exclude_unset=True)
    if item.keys() - _FIELDS[kind]:  # keys no field has (one set difference, not a test per key): in their order
        kept.update({key: value for key, value in item.items() if key.startswith("_")})
    return kept


def parse_page(kind: RecordKind, items: list[Any]) -> tuple[list[dict[str, Any]], list[Rejected]]:
    """A page split into what may be stored and what was rejected."""
    kept: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    for item in items:
        result = parse(kind, item)
        if isinstance(result, Rejected):
            rejected.append(result)
        else:
            kept.append(result)
    return kept, rejected
