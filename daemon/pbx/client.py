"""The SCIM 2.0 client of VeloPBX's provisioning API.

Reads (discovery, look-ups, the paginated inventory) and writes (one
:class:`PbxOperation` at a time, or many through ``/Bulk`` when the PBX
announces it). A write never raises for a problem of its own object: 409,
412, 404 and other 4xx answers are handled per the contract (adopt, re-read
and retry, recreate, or a typed per-object failure in the
:class:`PbxOutcome`). Only a PBX that stays unreachable (``PbxUnavailable``)
or refuses the token (``PbxAuthFailed``) ends a run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import aiohttp

from daemon.errors import PbxAuthFailed, PbxConflict, PbxError, PbxProtocolError, PbxRequestFailed, PbxUnavailable
from daemon.logging import get_logger
from daemon.pbx.filters import eq_filter
from daemon.pbx.mapping import PatchOperation, Payload, managed_view, patch_operations
from daemon.pbx.schema import BULK_REQUEST, ENDPOINTS, EXTENSION_NUMBER_PATHS, PATCH_OP, SCIM_JSON, Kind
from daemon.retry import Transport, retry_after_seconds

log = get_logger(__name__)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10, sock_read=30)
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_PAGE_SIZE = 200

Action = Literal["create", "update", "delete"]


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


@dataclass(frozen=True)
class PbxOperation:
    """One write. ``payload`` is the full desired object (for create, and to
    recreate an object the PBX lost); ``operations`` the PATCH of an update."""

    action: Action
    kind: Kind
    external_id: str
    payload: Payload | None = None
    operations: Sequence[PatchOperation] = ()
    pbx_id: str | None = None
    etag: str | None = None

    def describe(self) -> str:
        """``update User <externalId>: name.givenName, title`` (for logs and dry runs)."""
        text = f"{self.action} {self.kind} {self.external_id}"
        if self.action == "update":
            text += ": " + ", ".join(str(op.get("path")) for op in self.operations)
        return text


@dataclass(frozen=True)
class PbxOutcome:
    operation: PbxOperation
    pbx_id: str | None = None
    etag: str | None = None
    error: PbxError | None = None
    adopted: bool = False
    recreated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class PbxWriter(Protocol):
    """What the sync engine writes through: the real client or a dry run."""

    applied: list[PbxOperation]

    async def execute(self, operation: PbxOperation) -> PbxOutcome: ...

    def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]: ...


@dataclass
class _Answer:
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
    def etag(self) -> str | None:
        etag = next((v for k, v in self.headers.items() if k.lower() == "etag"), None)
        if etag is None and isinstance(self.body, Mapping):
            meta = self.body.get("meta")
            if isinstance(meta, Mapping) and isinstance(meta.get("version"), str):
                etag = meta["version"]
        return etag


class PbxClient:
    """One tenant's PBX, over the process-wide aiohttp session."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        token: str,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.config: ProviderConfig | None = None
        self.applied: list[PbxOperation] = []

    # --- transport ---

    async def _request(
        self,
        op: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        """Send with retries on 429/5xx/timeouts; any other answer is returned."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        all_headers = {"Authorization": f"Bearer {self._token}", "Accept": SCIM_JSON, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            all_headers["Content-Type"] = SCIM_JSON
        transport = self.transport
        metrics, tenant = transport.metrics, transport.tenant
        attempt = 0
        while True:
            attempt += 1
            started = transport.clock.monotonic()
            try:
                async with transport.session.request(
                    method,
                    url,
                    data=data,
                    params=params,
                    headers=all_headers,
                    ssl=transport.ssl,
                    timeout=self.timeout,
                    allow_redirects=False,
                ) as response:
                    raw = await response.read()
                    answer = _Answer(response.status, dict(response.headers), _json_or_none(raw))
            except (TimeoutError, aiohttp.ClientError) as err:
                metrics.pbx_requests.labels(tenant, op, "error").inc()
                if attempt >= transport.retry.max_attempts:
                    raise PbxUnavailable(
                        f"PBX unreachable at {self.base_url} after {attempt} attempts: {type(err).__name__}: {err}",
                        hint="check pbx.scim_url and that the PBX is up; the next run retries",
                    ) from err
                await transport.clock.sleep(transport.retry.backoff(attempt, transport.rng))
                continue
            metrics.pbx_requests.labels(tenant, op, str(answer.status)).inc()
            metrics.pbx_request_duration.labels(tenant, op).observe(transport.clock.monotonic() - started)
            if answer.status in (401, 403):
                raise PbxAuthFailed(
                    f"PBX refused the SCIM token ({answer.status}: {answer.detail})",
                    status=answer.status,
                    detail=answer.detail,
                    hint="check the token in pbx.token_file",
                )
            if answer.status in RETRYABLE_STATUSES and attempt < transport.retry.max_attempts:
                delay = transport.retry.delay(retry_after_seconds(answer.headers), attempt, transport.rng)
                if delay is not None:
                    log.info("retrying PBX request", op=op, status=answer.status, wait_seconds=round(delay, 2))
                    await transport.clock.sleep(delay)
                    continue
            if answer.status in RETRYABLE_STATUSES:
                raise PbxUnavailable(
                    f"PBX answered {answer.status} to {op} after {attempt} attempts: {answer.detail}",
                    status=answer.status,
                    detail=answer.detail,
                    hint="the next run retries",
                )
            return answer

    # --- reads ---

    async def discover(self) -> ProviderConfig:
        """Read ``/ServiceProviderConfig`` once per client (one client per run)."""
        if self.config is None:
            answer = await self._request("discover", "GET", "/ServiceProviderConfig")
            body = answer.body if answer.status == 200 and isinstance(answer.body, Mapping) else {}
            self.config = ProviderConfig.from_json(body)
        return self.config

    async def get(self, kind: Kind, pbx_id: str) -> PbxObject | None:
        answer = await self._request("get", "GET", f"{ENDPOINTS[kind]}/{pbx_id}")
        if answer.status == 404:
            return None
        if answer.status != 200 or not isinstance(answer.body, Mapping):
            raise PbxRequestFailed(f"cannot read {kind} {pbx_id}: {answer.detail}", status=answer.status, detail=answer.detail)
        return _object(kind, answer.body, answer.etag)

    async def find(self, kind: Kind, attribute: str, value: str) -> list[PbxObject]:
        """Objects whose ``attribute`` equals ``value`` exactly (value escaped)."""
        answer = await self._request(
            "find", "GET", ENDPOINTS[kind], params={"filter": eq_filter(attribute, value), "count": "10"}
        )
        if answer.status != 200 or not isinstance(answer.body, Mapping):
            raise PbxRequestFailed(f"cannot search {kind}: {answer.detail}", status=answer.status, detail=answer.detail)
        return [_object(kind, item, None) for item in answer.body.get("Resources") or [] if isinstance(item, Mapping)]

    async def find_by_external_id(self, kind: Kind, external_id: str) -> PbxObject | None:
        found = await self.find(kind, "externalId", external_id)
        return found[0] if found else None

    async def iter_objects(self, kind: Kind, attributes: Sequence[str] = ()) -> AsyncIterator[PbxObject]:
        """Every object of a kind, page by page (the existing-extension inventory)."""
        config = await self.discover()
        count = max(1, min(DEFAULT_PAGE_SIZE, config.filter_max_results))
        start = 1
        while True:
            params = {"startIndex": str(start), "count": str(count)}
            if attributes:
                params["attributes"] = ",".join(["externalId", *attributes])
            answer = await self._request("list", "GET", ENDPOINTS[kind], params=params)
            if answer.status != 200 or not isinstance(answer.body, Mapping):
                raise PbxRequestFailed(f"cannot list {kind}: {answer.detail}", status=answer.status, detail=answer.detail)
            resources = [r for r in answer.body.get("Resources") or [] if isinstance(r, Mapping)]
            for resource in resources:
                yield _object(kind, resource, None)
            total = scim_int(answer.body.get("totalResults"), f"totalResults of the {kind} list")
            start += len(resources)
            if not resources or start > total:
                return

    # --- writes ---

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        """Apply one write with the contract's conflict rules; never raises for the object itself."""
        try:
            if operation.action == "create":
                outcome = await self._create(operation)
            elif operation.action == "update":
                outcome = await self._update(operation)
            else:
                outcome = await self._delete(operation)
        except (PbxConflict, PbxRequestFailed) as err:
            outcome = PbxOutcome(operation, operation.pbx_id, None, err)
        if outcome.ok:
            self.applied.append(operation)
        else:
            log.warning("PBX refused an object", operation=operation.describe(), error=str(outcome.error))
        return outcome

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        """Apply many writes, through ``/Bulk`` when the PBX announces it."""
        config = await self.discover()
        if not config.bulk or len(operations) < 2:
            for operation in operations:
                yield await self.execute(operation)
            return
        for chunk in _chunks(operations, config, self._bulk_entry):
            if len(chunk) == 1:
                yield await self.execute(chunk[0])
                continue
            async for outcome in self._bulk(chunk):
                yield outcome

    async def _create(self, operation: PbxOperation) -> PbxOutcome:
        payload = _required_payload(operation)
        answer = await self._request("create", "POST", ENDPOINTS[operation.kind], body=payload)
        if answer.status == 201 and isinstance(answer.body, Mapping):
            return PbxOutcome(operation, str(answer.body.get("id")), answer.etag)
        if answer.status == 409:
            return await self._adopt_or_refuse(operation, payload, answer)
        raise _failure(operation, answer)

    async def _adopt_or_refuse(self, operation: PbxOperation, payload: Payload, answer: _Answer) -> PbxOutcome:
        """409 on create: adopt the PBX's object if it is unclaimed or ours, else a PbxConflict."""
        kind = operation.kind
        candidates = []
        if kind == "User" and isinstance(payload.get("userName"), str):
            candidates = await self.find(kind, "userName", payload["userName"])
        if not candidates:
            candidates = await self.find(kind, "externalId", operation.external_id)
        for existing in candidates:
            if existing.external_id not in (None, "", operation.external_id):
                name = payload.get("userName") or payload.get("displayName")
                raise PbxConflict(
                    f"the PBX already has {kind} {name!r} (id {existing.id}) linked to another "
                    f"directory object ({existing.external_id}); left alone",
                    status=409,
                    detail=answer.detail,
                    hint="remove or unlink that PBX object, or exclude this user",
                )
            current = await self.get(kind, existing.id)
            if current is None:
                continue
            adopt = replace(operation, action="update", pbx_id=current.id, etag=current.etag,
                            operations=patch_operations(managed_view(current.data, payload), payload))
            outcome = await self._update(adopt)
            log.info("adopted an existing PBX object", kind=kind, pbx_id=current.id, external_id=operation.external_id)
            return replace(outcome, operation=operation, adopted=True)
        raise await self._conflict(operation, payload, answer)

    async def _conflict(self, operation: PbxOperation, payload: Mapping[str, Any], answer: _Answer) -> PbxConflict:
        """A uniqueness conflict that is not adoptable: name the extension number if that is it."""
        path = EXTENSION_NUMBER_PATHS.get(operation.kind)
        number = _extension_number(payload, path) if path else None
        if path and number:
            holders = await self.find(operation.kind, path, number)
            holders = [h for h in holders if h.external_id != operation.external_id]
            if holders:
                return PbxConflict(
                    f"extension {number} is already used on the PBX by {operation.kind} {holders[0].id}; "
                    f"{operation.kind} {operation.external_id} was not written",
                    status=409,
                    detail=answer.detail,
                    hint="the next run allocates another number",
                )
        return PbxConflict(
            f"the PBX refused {operation.describe()}: {answer.detail}", status=409, detail=answer.detail
        )

    async def _update(self, operation: PbxOperation) -> PbxOutcome:
        if not operation.operations:
            return PbxOutcome(operation, operation.pbx_id, operation.etag)
        if operation.pbx_id is None:
            raise PbxRequestFailed(f"{operation.describe()}: no PBX id to update")
        etag = operation.etag
        config = await self.discover()
        for attempt in (1, 2):
            headers = {"If-Match": etag} if (config.etag and etag) else {}
            body = {"schemas": [PATCH_OP], "Operations": list(operation.operations)}
            answer = await self._request("update", "PATCH", f"{ENDPOINTS[operation.kind]}/{operation.pbx_id}", body=body, headers=headers)
            if answer.status in (200, 204):
                return PbxOutcome(operation, operation.pbx_id, answer.etag)
            if answer.status == 412 and attempt == 1:
                current = await self.get(operation.kind, operation.pbx_id)  # re-read, then retry once
                if current is None:
                    return await self._recreate(operation)
                etag = current.etag
                continue
            if answer.status == 404:
                return await self._recreate(operation)
            if answer.status == 409:
                raise await self._conflict(operation, _values_of(operation.operations), answer)
            raise _failure(operation, answer)
        raise PbxRequestFailed(f"{operation.describe()}: the PBX kept answering 412", status=412)

    async def _recreate(self, operation: PbxOperation) -> PbxOutcome:
        """The PBX lost an object we manage: create it again from the full payload."""
        if operation.payload is None:
            raise PbxRequestFailed(f"{operation.describe()}: the PBX lost the object and no payload was given to recreate it", status=404)
        log.warning("the PBX lost an object; recreating it", operation=operation.describe())
        outcome = await self._create(replace(operation, action="create"))
        return replace(outcome, operation=operation, recreated=True)

    async def _delete(self, operation: PbxOperation) -> PbxOutcome:
        if operation.pbx_id is None:
            return PbxOutcome(operation)  # never created: nothing to delete
        answer = await self._request("delete", "DELETE", f"{ENDPOINTS[operation.kind]}/{operation.pbx_id}")
        if answer.status in (200, 204, 404):  # 404: already gone, which is what we wanted
            return PbxOutcome(operation, operation.pbx_id)
        raise _failure(operation, answer)

    # --- bulk ---

    def _bulk_entry(self, index: int, operation: PbxOperation) -> dict[str, Any]:
        endpoint = ENDPOINTS[operation.kind]
        entry: dict[str, Any] = {"bulkId": f"op{index}"}
        if operation.action == "create":
            entry.update(method="POST", path=endpoint, data=_required_payload(operation))
        elif operation.action == "update":
            entry.update(method="PATCH", path=f"{endpoint}/{operation.pbx_id}",
                         data={"schemas": [PATCH_OP], "Operations": list(operation.operations)})
            if operation.etag and self.config is not None and self.config.etag:
                entry["version"] = operation.etag
        else:
            entry.update(method="DELETE", path=f"{endpoint}/{operation.pbx_id}")
        return entry

    async def _bulk(self, chunk: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        entries = [self._bulk_entry(index, op) for index, op in enumerate(chunk)]
        answer = await self._request("bulk", "POST", "/Bulk", body={"schemas": [BULK_REQUEST], "Operations": entries})
        results = answer.body.get("Operations") if isinstance(answer.body, Mapping) else None
        if answer.status == 413 and len(chunk) > 1:  # the PBX's limit was lower than announced
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                async for outcome in self._bulk(part):
                    yield outcome
            return
        if answer.status != 200 or not isinstance(results, list):
            for operation in chunk:  # fall back to one request per object
                yield await self.execute(operation)
            return
        by_id = {str(r.get("bulkId")): r for r in results if isinstance(r, Mapping)}
        for index, operation in enumerate(chunk):
            result = by_id.get(f"op{index}")
            status = scim_int(result.get("status"), "a /Bulk result's status") if result else 0
            if result is not None and 200 <= status < 300:
                pbx_id = operation.pbx_id
                if operation.action == "create":
                    pbx_id = str(result.get("location", "")).rstrip("/").rsplit("/", 1)[-1] or None
                version = result.get("version")
                self.applied.append(operation)
                yield PbxOutcome(operation, pbx_id, str(version) if version else None)
            elif operation.action == "delete" and status == 404:
                self.applied.append(operation)
                yield PbxOutcome(operation, operation.pbx_id)
            elif status in (0, 404, 409, 412, *RETRYABLE_STATUSES):
                yield await self.execute(operation)  # the full single-object rules apply
            else:
                response = result.get("response") if result else None
                detail = str(response.get("detail")) if isinstance(response, Mapping) and response.get("detail") else f"HTTP {status}"
                error = PbxRequestFailed(f"the PBX refused {operation.describe()}: {detail}", status=status, detail=detail)
                log.warning("PBX refused an object", operation=operation.describe(), error=str(error))
                yield PbxOutcome(operation, operation.pbx_id, None, error)


# --- helpers ---


def _json_or_none(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]
    except RecursionError as err:  # e.g. 100k nested arrays
        raise PbxProtocolError("the PBX answered with JSON nested too deeply to read",
                               hint="check pbx.scim_url points at the PBX's SCIM API") from err


def scim_int(value: Any, what: str) -> int:
    """A SCIM integer (JSON number, or a numeric string as some servers send); absent is 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise PbxProtocolError(f"the PBX sent {what} = {str(value)[:40]!r}, which is not a whole number",
                               hint="check pbx.scim_url points at the PBX's SCIM API; report it to the PBX vendor")
    return int(value)


def _object(kind: Kind, body: Mapping[str, Any], etag: str | None) -> PbxObject:
    meta = body.get("meta")
    if etag is None and isinstance(meta, Mapping) and isinstance(meta.get("version"), str):
        etag = meta["version"]
    external = body.get("externalId")
    return PbxObject(kind, str(body.get("id")), str(external) if external else None, etag, dict(body))


def _required_payload(operation: PbxOperation) -> Payload:
    if operation.payload is None:
        raise PbxRequestFailed(f"{operation.describe()}: no payload to send")
    return operation.payload


def _failure(operation: PbxOperation, answer: _Answer) -> PbxRequestFailed:
    return PbxRequestFailed(
        f"the PBX refused {operation.describe()}: {answer.detail}", status=answer.status, detail=answer.detail
    )


def _extension_number(payload: Mapping[str, Any], path: str) -> str | None:
    urn, _, attribute = path.rpartition(":")
    extension = payload.get(urn)
    if isinstance(extension, Mapping) and isinstance(extension.get(attribute), str):
        return str(extension[attribute])
    flat = payload.get(path)
    return str(flat) if isinstance(flat, str) else None


def _values_of(operations: Sequence[PatchOperation]) -> dict[str, Any]:
    """PATCH values by path, read like a flattened payload."""
    return {str(op["path"]): op["value"] for op in operations if "value" in op}


def _chunks(
    operations: Sequence[PbxOperation],
    config: ProviderConfig,
    entry: Any,
) -> list[list[PbxOperation]]:
    """Split into bulk requests within maxOperations and maxPayloadSize."""
    envelope = len(json.dumps({"schemas": [BULK_REQUEST], "Operations": []}).encode())
    chunks: list[list[PbxOperation]] = []
    current: list[PbxOperation] = []
    size = envelope
    for operation in operations:
        entry_size = len(json.dumps(entry(len(current), operation), ensure_ascii=False).encode()) + 1
        too_many = len(current) >= config.bulk_max_operations
        too_big = config.bulk_max_payload_size and size + entry_size > config.bulk_max_payload_size
        if current and (too_many or too_big):
            chunks.append(current)
            current, size = [], envelope
        current.append(operation)
        size += entry_size
    if current:
        chunks.append(current)
    return chunks


__all__ = [
    "PbxClient",
    "PbxObject",
    "PbxOperation",
    "PbxOutcome",
    "PbxWriter",
    "ProviderConfig",
]
