"""The values the PBX client reads and writes: what the PBX announces, its
objects, one write (:class:`PbxOperation`) and its outcome."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol
from urllib.parse import unquote

from daemon.errors import PbxError, PbxProtocolError, PbxRequestFailed
from daemon.pbx.mapping import PatchOperation, Payload
from daemon.pbx.schema import Kind
from daemon.retry import header

DEFAULT_PAGE_SIZE = 200

Action = Literal["create", "update", "delete"]

# An id the PBX hands out must be usable as one path segment and stored as is: no
# slash, space, query or fragment, of sane length, and not a placeholder text.
_PBX_ID = re.compile(r"[A-Za-z0-9._~:@!$&'()*+,;=-]{1,200}")
_PLACEHOLDER_IDS = frozenset({"none", "null", "undefined", "nil", "nan"})


def valid_pbx_id(value: Any) -> str | None:
    """``value`` when it can be a PBX object's id, else None (it is then never recorded)."""
    if not isinstance(value, str) or not _PBX_ID.fullmatch(value) or value.lower() in _PLACEHOLDER_IDS:
        return None
    return value


_SCIM_TYPE = re.compile(r"[A-Za-z]{1,40}")  # RFC 7644 3.12's keywords (uniqueness, invalidValue ...)


def scim_code(status: int, body: Any) -> str:
    """An error answer as codes only (``HTTP 409 uniqueness``): what records, the API and
    pages show with our own words. The PBX's ``detail`` may quote the request, so it
    stays on the error (redacted) and in the log, never in a stored reason."""
    scim_type = body.get("scimType") if isinstance(body, Mapping) else None
    keyword = f" {scim_type}" if isinstance(scim_type, str) and _SCIM_TYPE.fullmatch(scim_type) else ""
    return f"HTTP {status}{keyword}"


def scim_int(value: Any, what: str) -> int:
    """A SCIM integer (JSON number, or a numeric string as some servers send); absent is 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise PbxProtocolError(f"the PBX sent {what} = {str(value)[:40]!r}, which is not a whole number",
                               hint="check pbx.scim_url points at the PBX's SCIM API; report it to the PBX vendor")
    return int(value)


@dataclass(frozen=True)
class ProviderConfig:
    """What ``/ServiceProviderConfig`` announces, with safe defaults."""

    patch: bool = True
    bulk: bool = False
    bulk_max_operations: int = 0
    bulk_max_payload_size: int = 0
    etag: bool = False
    filter_max_results: int = DEFAULT_PAGE_SIZE

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ProviderConfig:
        def section(name: str) -> Mapping[str, Any]:
            value = body.get(name)
            return value if isinstance(value, Mapping) else {}

        bulk = section("bulk")
        max_operations = scim_int(bulk.get("maxOperations"), "ServiceProviderConfig bulk.maxOperations")
        return cls(
            patch=bool(section("patch").get("supported", True)),
            bulk=bool(bulk.get("supported")) and max_operations > 0,
            bulk_max_operations=max_operations,
            bulk_max_payload_size=scim_int(bulk.get("maxPayloadSize"), "ServiceProviderConfig bulk.maxPayloadSize"),
            etag=bool(section("etag").get("supported")),
            filter_max_results=scim_int(section("filter").get("maxResults"), "ServiceProviderConfig filter.maxResults")
            or DEFAULT_PAGE_SIZE,
        )


@dataclass(frozen=True)
class PbxObject:
    kind: Kind
    id: str
    external_id: str | None
    etag: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PbxOperation:
    """One write. ``payload`` is the full desired object (for create, and to
    recreate or re-read an object); ``operations`` the PATCH of an update.

    ``maybe_applied``: this write may already have reached the PBX (a crash or
    a lost answer): a create looks the object up by externalId first, an update
    re-reads the object and sends only what still differs."""

    action: Action
    kind: Kind
    external_id: str
    payload: Payload | None = None
    operations: Sequence[PatchOperation] = ()
    pbx_id: str | None = None
    etag: str | None = None
    maybe_applied: bool = False

    def describe(self) -> str:
        """``update User <externalId>: name.givenName, title`` (for logs and dry runs)."""
        text = f"{self.action} {self.kind} {self.external_id}"
        if self.action == "update":
            text += ": " + ", ".join(str(op.get("path")) for op in self.operations)
        return text

    @property
    def sends_nothing(self) -> bool:
        """An update with nothing to change (and nothing to re-check) needs no request."""
        return self.action == "update" and not self.operations and not self.maybe_applied

    def with_payload(self, payload: Payload) -> PbxOperation:
        """This write with its payload built (every field copied: one per new user, faster than ``replace``)."""
        return PbxOperation(self.action, self.kind, self.external_id, payload, self.operations, self.pbx_id,
                            self.etag, self.maybe_applied)


@dataclass(frozen=True)
class PbxOutcome:
    operation: PbxOperation
    pbx_id: str | None = None
    etag: str | None = None
    error: PbxError | None = None
    adopted: bool = False
    recreated: bool = False
    refused_attributes: tuple[str, ...] = ()  # optional attributes the PBX refused; the rest was written

    @property
    def ok(self) -> bool:
        return self.error is None


class PbxWriter(Protocol):
    """What the sync engine writes through: the real client or a dry run."""

    async def execute(self, operation: PbxOperation) -> PbxOutcome: ...

    def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]: ...

    async def operations_per_request(self) -> int:
        """How many writes one request carries: ``bulk.maxOperations`` where the PBX has ``/Bulk``, else 1."""
        ...


@dataclass
class Answer:
    """One HTTP answer of the PBX, body parsed as JSON where it is JSON."""

    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def detail(self) -> str:
        if isinstance(self.body, Mapping):
            detail = self.body.get("detail") or self.body.get("scimType")
            if detail:
                return str(detail)
        return f"HTTP {self.status}"

    @property
    def code(self) -> str:
        return scim_code(self.status, self.body)

    @property
    def etag(self) -> str | None:
        etag = header(self.headers, "etag")
        if etag is None and isinstance(self.body, Mapping):
            meta = self.body.get("meta")
            if isinstance(meta, Mapping) and isinstance(meta.get("version"), str):
                etag = meta["version"]
        return etag


def pbx_object(kind: Kind, body: Mapping[str, Any], etag: str | None) -> PbxObject:
    """An object the PBX served; one without a usable id is not SCIM and is never taken as ours."""
    meta = body.get("meta")
    if etag is None and isinstance(meta, Mapping) and isinstance(meta.get("version"), str):
        etag = meta["version"]
    pbx_id = valid_pbx_id(body.get("id"))
    if pbx_id is None:
        raise PbxProtocolError(f"the PBX served a {kind} whose id is {str(body.get('id'))[:40]!r}, not a usable id",
                               hint="report it to the PBX vendor; nothing was recorded for it")
    external = body.get("externalId")
    return PbxObject(kind, pbx_id, str(external) if external else None, etag, dict(body))


def required_payload(operation: PbxOperation) -> Payload:
    if operation.payload is None:
        raise PbxRequestFailed(f"{operation.describe()}: no payload to send")
    return operation.payload


def refused(operation: PbxOperation, answer: Answer) -> PbxRequestFailed:
    return PbxRequestFailed(
        f"the PBX refused {operation.describe()} ({answer.code})", status=answer.status, detail=answer.detail
    )


def created_answer_agrees(body: Mapping[str, Any], headers: Mapping[str, str], external_id: str, pbx_id: str) -> bool:
    """A 201's id is what the rest of its answer says: the externalId we sent, and any
    ``meta.location`` or ``Location`` naming that same id (else it is read back)."""
    if body.get("externalId") != external_id:
        return False
    meta = body.get("meta")
    locations = [meta.get("location") if isinstance(meta, Mapping) else None, header(headers, "location")]
    return all(_last_segment(location) == pbx_id for location in locations if location)


def _last_segment(location: Any) -> str:
    return unquote(str(location).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])


def without_photos(operation: PbxOperation) -> PbxOperation | None:
    """The write without its photo, or None when it carries none (see ``PbxClient._apply``)."""
    payload = operation.payload
    kept = [op for op in operation.operations if str(op.get("path")) != "photos" or op.get("op") == "remove"]
    whole = operation.action == "create" or operation.maybe_applied  # sends the payload, not only operations
    has_photo = (whole and payload is not None and "photos" in payload) or len(kept) < len(operation.operations)
    if not has_photo:
        return None
    stripped = {k: v for k, v in payload.items() if k != "photos"} if payload is not None else None
    return replace(operation, payload=stripped, operations=kept)
