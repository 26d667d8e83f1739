"""SCIM ``/Bulk`` (RFC 7644 section 3.7): request entries, chunks within the
PBX's announced limits, and reading the per-operation results.

Only writes that have something to send go into a bulk request: an update
with no operations is done without a request (an empty ``Operations`` list
is refused by SCIM servers with 400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from daemon.pbx.connection import pbx_link
from daemon.pbx.schema import BULK_REQUEST, ENDPOINTS, PATCH_OP
from daemon.pbx.types import PbxOperation, ProviderConfig, required_payload, scim_int

ENVELOPE_BYTES = len(json.dumps({"schemas": [BULK_REQUEST], "Operations": []}).encode())


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


def chunks(operations: Sequence[PbxOperation], config: ProviderConfig) -> list[list[PbxOperation]]:
    """Split into bulk requests within maxOperations and maxPayloadSize."""
    out: list[list[PbxOperation]] = []
    current: list[PbxOperation] = []
    size = ENVELOPE_BYTES
    for operation in operations:
        entry_size = len(json.dumps(bulk_entry(len(current), operation, config.etag), ensure_ascii=False).encode()) + 1
        too_many = len(current) >= config.bulk_max_operations
        too_big = config.bulk_max_payload_size and size + entry_size > config.bulk_max_payload_size
        if current and (too_many or too_big):
            out.append(current)
            current, size = [], ENVELOPE_BYTES
        current.append(operation)
        size += entry_size
    if current:
        out.append(current)
    return out


@dataclass(frozen=True)
class BulkResult:
    """One operation's answer inside a bulk response (status 0: none was given)."""

    status: int
    pbx_id: str | None
    version: str | None
    detail: str


def bulk_results(body: Any, chunk: Sequence[PbxOperation], base_url: str) -> list[BulkResult] | None:
    """The results in ``chunk`` order, or None when the body is not a bulk response.

    A create's id is read from its ``location``, which must be on ``base_url``'s
    origin (:func:`~daemon.pbx.connection.pbx_link`): a PBX, or a proxy before
    it, that places our objects elsewhere ends the run with its reason rather
    than have later writes aimed by an address we did not configure."""
    results = body.get("Operations") if isinstance(body, Mapping) else None
    if not isinstance(results, list):
        return None
    by_id = {str(r.get("bulkId")): r for r in results if isinstance(r, Mapping)}
    out = []
    for index, operation in enumerate(chunk):
        result = by_id.get(f"op{index}")
        if result is None:
            out.append(BulkResult(0, None, None, "no result for this operation"))
            continue
        status = scim_int(result.get("status"), "a /Bulk result's status")
        pbx_id = operation.pbx_id
        if operation.action == "create":
            location = str(result.get("location") or "")
            if not _is_path(location):
                pbx_link(location, base_url, "/Bulk location")
            pbx_id = location.rstrip("/").rsplit("/", 1)[-1] or None
        response = result.get("response")
        detail = str(response.get("detail")) if isinstance(response, Mapping) and response.get("detail") else f"HTTP {status}"
        version = result.get("version")
        out.append(BulkResult(status, pbx_id, str(version) if version else None, detail))
    return out


def _is_path(location: str) -> bool:
    """A location without scheme or host names a place on the PBX itself."""
    try:
        parts = urlsplit(location)
    except ValueError:
        return False
    return not parts.scheme and not parts.netloc
