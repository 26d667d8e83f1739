"""SCIM ``/Bulk`` (RFC 7644 section 3.7): request entries, chunks within the
PBX's announced limits, and reading the per-operation results.

Only writes that have something to send go into a bulk request: an update
with no operations is done without a request (an empty ``Operations`` list
is refused by SCIM servers with 400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from daemon.pbx.connection import encoded_body, pbx_link
from daemon.pbx.schema import BULK_REQUEST, ENDPOINTS, PATCH_OP
from daemon.pbx.types import Answer, PbxOperation, ProviderConfig, required_payload, scim_int, valid_pbx_id


def bulk_entry(index: int, operation: PbxOperation, etag_supported: bool) -> dict[str, Any]:
    """One ``Operations`` entry; ``bulkId`` is ``op<index>`` within its chunk."""
    endpoint = ENDPOINTS[operation.kind]
    entry: dict[str, Any] = {"bulkId": f"op{index}"}
    if operation.action == "create":
        entry.update(method="POST", path=endpoint, data=required_payload(operation))
    elif operation.action == "update":
        entry.update(method="PATCH", path=f"{endpoint}/{operation.pbx_id}",
                     data={"schemas": [PATCH_OP], "Operations": list(operation.operations)})
        if operation.etag and etag_supported:
            entry["version"] = operation.etag
    else:
        entry.update(method="DELETE", path=f"{endpoint}/{operation.pbx_id}")
    return entry


def bulk_body(chunk: Sequence[PbxOperation], etag_supported: bool) -> dict[str, Any]:
    return {"schemas": [BULK_REQUEST], "Operations": [bulk_entry(i, op, etag_supported) for i, op in enumerate(chunk)]}


@dataclass(frozen=True)
class BulkRequest:
    """One ``/Bulk`` request: its operations and its body as sent, joined from the very bytes
    its entries were sized by (each entry is serialised once)."""

    operations: list[PbxOperation]
    body: bytes


ENVELOPE_OPEN, ENVELOPE_CLOSE = encoded_body({"schemas": [BULK_REQUEST], "Operations": []}).rsplit(b"]", 1)
ENVELOPE_BYTES = len(ENVELOPE_OPEN) + len(b"]") + len(ENVELOPE_CLOSE)  # the body of an empty request
ENTRY_SEPARATOR = b", "  # what json.dumps puts between two list items: the body is what encoded_body gives


def bulk_requests(operations: Sequence[PbxOperation], config: ProviderConfig) -> list[BulkRequest]:
    """Split into bulk requests within maxOperations and maxPayloadSize.

    Sizes are those of the body as sent (:func:`encoded_body`: each entry with
    its own ``bulkId`` and the separator before it), so a request is never
    over the announced size by a byte; an operation over it alone goes alone."""
    out: list[BulkRequest] = []
    current: list[PbxOperation] = []
    entries: list[bytes] = []
    size = ENVELOPE_BYTES
    limit = config.bulk_max_payload_size

    def close() -> None:
        out.append(BulkRequest(current, ENVELOPE_OPEN + ENTRY_SEPARATOR.join(entries) + b"]" + ENVELOPE_CLOSE))

    for operation in operations:
        entry = encoded_body(bulk_entry(len(current), operation, config.etag))
        entry_size = len(entry) + (len(ENTRY_SEPARATOR) if current else 0)
        too_many = len(current) >= config.bulk_max_operations
        too_big = bool(limit) and size + entry_size > limit
        if current and (too_many or too_big):
            close()
            current, entries, size = [], [], ENVELOPE_BYTES
            entry = encoded_body(bulk_entry(0, operation, config.etag))
            entry_size = len(entry)
        current.append(operation)
        entries.append(entry)
        size += entry_size
    if current:
        close()
    return out


@dataclass(frozen=True)
class BulkResult:
    """One operation's answer inside a bulk response (status 0: none was given).

    ``pbx_id`` of a create is None when its ``location`` names no usable id:
    the create is then resolved by reading, as a lost answer is."""

    status: int
    pbx_id: str | None
    version: str | None
    detail: str  # the PBX's own words (logged, never stored)
    answer: Answer  # the result's status and response, as a single request's answer

    @property
    def code(self) -> str:
        return self.answer.code


METHODS = {"create": "POST", "update": "PATCH", "delete": "DELETE"}


def bulk_results(body: Any, chunk: Sequence[PbxOperation], base_url: str) -> list[BulkResult] | None:
    """The results in ``chunk`` order, or None when the body is not a bulk response.

    RFC 7644 section 3.7 requires ``bulkId`` only for POST: a result is matched
    by its ``bulkId``, else by its ``method`` and ``location`` (the object a
    PATCH or DELETE was aimed at), else by its position when the server answered
    every operation in order (as many results as operations, each with its
    operation's method). A create's id is read from its ``location``, which must
    be on ``base_url``'s origin (:func:`~daemon.pbx.connection.pbx_link`)."""
    listed = body.get("Operations") if isinstance(body, Mapping) else None
    if not isinstance(listed, list):
        return None
    results = [r for r in listed if isinstance(r, Mapping)]
    by_bulk_id = {str(r["bulkId"]): r for r in results if r.get("bulkId")}
    by_target: dict[tuple[str, str], Mapping[str, Any]] | None = None  # parsed only when a bulkId is missing
    in_order = len(results) == len(chunk) and all(
        str(r.get("method") or "").upper() in ("", METHODS[op.action]) for r, op in zip(results, chunk, strict=True))
    out = []
    for index, operation in enumerate(chunk):
        result = by_bulk_id.get(f"op{index}")
        if result is None and operation.action != "create":
            if by_target is None:
                by_target = _by_target(results)
            result = by_target.get((METHODS[operation.action], f"{ENDPOINTS[operation.kind]}/{operation.pbx_id}"))
        if result is None and in_order and not results[index].get("bulkId"):
            result = results[index]
        out.append(_result(result, operation, base_url))
    return out


def _result(result: Mapping[str, Any] | None, operation: PbxOperation, base_url: str) -> BulkResult:
    if result is None:
        return BulkResult(0, None, None, "no result for this operation", Answer(0, {}, None))
    status = scim_int(result.get("status"), "a /Bulk result's status")
    response = result.get("response")
    pbx_id = operation.pbx_id
    if operation.action == "create":
        location = str(result.get("location") or "")
        if location and not location.startswith(f"{base_url}/") and not _is_path(location):  # one per create:
            pbx_link(location, base_url, "/Bulk location")  # parsed only when it is not plainly under base_url
        pbx_id = valid_pbx_id(unquote(location.rstrip("/").rsplit("/", 1)[-1])) if location else None
    detail = str(response.get("detail")) if isinstance(response, Mapping) and response.get("detail") else f"HTTP {status}"
    version = result.get("version")
    if not version and isinstance(response, Mapping) and isinstance(response.get("meta"), Mapping):
        version = response["meta"].get("version")  # the object as it is now, when the server shows it
    return BulkResult(status, pbx_id, str(version) if version else None, detail, Answer(status, {}, response))


def _by_target(results: list[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Results by (method, ``/Users/<id>``), for those a server answered without their ``bulkId``."""
    by_target: dict[tuple[str, str], Mapping[str, Any]] = {}
    for result in results:
        target = _target(result)
        if target:
            by_target[(str(result.get("method") or "").upper(), target)] = result
    return by_target


def _target(result: Mapping[str, Any]) -> str | None:
    """``/Users/<id>`` from a result's ``location`` (absolute or a path), for matching PATCH and DELETE."""
    location = result.get("location")
    if not isinstance(location, str) or not location:
        return None
    try:
        path = unquote(urlsplit(location).path).rstrip("/")
    except ValueError:
        return None
    parts = path.rsplit("/", 2)
    return f"/{parts[-2]}/{parts[-1]}" if len(parts) == 3 else None


def _is_path(location: str) -> bool:
    """A location without scheme or host names a place on the PBX itself."""
    if location.startswith("/") and not location.startswith("//"):  # no scheme, no host: nothing to parse
        return True
    try:
        parts = urlsplit(location)
    except ValueError:
        return False
    return not parts.scheme and not parts.netloc
