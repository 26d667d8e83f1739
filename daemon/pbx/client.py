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

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from daemon.errors import ExtensionTaken, PbxConflict, PbxRequestFailed
from daemon.logging import get_logger
from daemon.pbx.bulk import bulk_body, bulk_requests, bulk_results
from daemon.pbx.connection import DEFAULT_TIMEOUT, RETRYABLE_STATUSES, WRITES_IN_FLIGHT, AnswerLost, PbxConnection
from daemon.pbx.mapping import PatchOperation, Payload, managed_view, patch_operations
from daemon.pbx.schema import ENDPOINTS, EXTENSION_NUMBER_PATHS, PATCH_OP
from daemon.pbx.types import (
    Answer,
    PbxObject,
    PbxOperation,
    PbxOutcome,
    PbxWriter,
    ProviderConfig,
    created_answer_agrees,
    refused,
    required_payload,
    valid_pbx_id,
    without_photos,
)
from daemon.retry import RetryableFailure
from daemon.window import run_windowed

log = get_logger(__name__)


class PbxClient(PbxConnection):
    """Reads (see :class:`PbxConnection`) and the writes, with the contract's rules."""

    # --- writes ---

    async def execute(self, operation: PbxOperation) -> PbxOutcome:
        """Apply one write with the contract's conflict rules; never raises for the object itself.

        A lost answer is resolved before the next attempt: a create looks the
        object up by externalId, an update re-reads the object; nothing is ever
        created twice."""
        if operation.sends_nothing:
            return PbxOutcome(operation, operation.pbx_id, operation.etag)
        current = [operation]

        async def attempt() -> PbxOutcome:
            try:
                return await self._apply(current[0])
            except AnswerLost as lost:
                current[0] = replace(current[0], maybe_applied=True)
                log.info("the PBX's answer was lost; resolving by reading before trying again",
                         operation=operation.describe(), reason=lost.failure.reason)
                raise lost.failure from lost

        try:
            outcome = await self.transport.retrying(attempt)
        except RetryableFailure as failure:
            raise self._unavailable(operation.action, failure) from failure
        except (PbxConflict, PbxRequestFailed) as err:
            outcome = PbxOutcome(operation, operation.pbx_id, None, err)
        outcome = replace(outcome, operation=operation)
        if not outcome.ok:
            log.warning("PBX refused an object", operation=operation.describe(), error=str(outcome.error),
                        detail=getattr(outcome.error, "detail", None))
        return outcome

    async def _apply(self, operation: PbxOperation) -> PbxOutcome:
        """One attempt; a 400 to a write carrying a photo is tried once more without it.

        The photo is optional (and a ``data:`` URI, where RFC 7643 expects a URL):
        a PBX that refuses it still gets the rest of the object, and the outcome
        names what was left out."""
        try:
            return await self._apply_once(operation)
        except PbxRequestFailed as err:
            without = without_photos(operation)
            if err.status != 400 or without is None:
                raise
            log.warning("the PBX refused the photo; writing the object without it",
                        operation=operation.describe(), detail=err.detail)
            outcome = await self._apply_once(without)
            return replace(outcome, refused_attributes=("photos",))

    async def _apply_once(self, operation: PbxOperation) -> PbxOutcome:
        if operation.action == "create":
            return await self._create(operation)
        if operation.action == "update":
            return await self._update(operation)
        return await self._delete(operation)

    async def operations_per_request(self) -> int:
        config = await self.discover()
        return config.bulk_max_operations if config.bulk else 1

    async def execute_many(self, operations: Sequence[PbxOperation]) -> AsyncIterator[PbxOutcome]:
        """Apply many writes, through ``/Bulk`` when the PBX announces it.

        Updates with nothing to send are done without a request; writes that may
        already be applied go one by one, because they need a read first. Where
        the announced payload size splits them into several requests, up to
        ``WRITES_IN_FLIGHT`` are in flight; the outcomes come in request order."""
        config = await self.discover()
        pending: list[PbxOperation] = []
        for operation in operations:
            if operation.sends_nothing:
                yield PbxOutcome(operation, operation.pbx_id, operation.etag)
            else:
                pending.append(operation)
        bulkable = [op for op in pending if not op.maybe_applied] if config.bulk else []
        for operation in pending:
            if len(bulkable) < 2 or operation.maybe_applied:
                yield await self.execute(operation)
        if len(bulkable) < 2:
            return
        requests = bulk_requests(bulkable, config)
        answered: list[list[PbxOutcome]] = [[] for _ in requests]

        async def send(index: int) -> None:
            request = requests[index]
            if len(request.operations) == 1:
                answered[index] = [await self.execute(request.operations[0])]
            else:
                answered[index] = [outcome async for outcome in self._bulk(request.operations, request.body)]

        # several requests (over the announced payload size): the next is sent while the PBX works on one
        await run_windowed([partial(send, index) for index in range(len(requests))], WRITES_IN_FLIGHT)
        for outcomes in answered:
            for outcome in outcomes:
                yield outcome

    async def _create(self, operation: PbxOperation) -> PbxOutcome:
        payload = required_payload(operation)
        if operation.maybe_applied:
            existing = await self.find_by_external_id(operation.kind, operation.external_id)
            if existing is not None:
                log.info("found the object a lost answer had created", kind=operation.kind, pbx_id=existing.id)
                return await self._converge(operation, payload, existing, adopted=True)
        answer = await self._request("create", "POST", ENDPOINTS[operation.kind], body=payload, idempotent=False)
        if answer.status == 201:
            return await self._created(operation, answer)
        if answer.status == 409:
            return await self._adopt_or_refuse(operation, payload, answer)
        raise refused(operation, answer)

    async def _created(self, operation: PbxOperation, answer: Answer) -> PbxOutcome:
        """A 201 is recorded only with an id the PBX serves as this object.

        An id that is missing, unusable, or not what the rest of the answer says
        (externalId, ``meta.location``, ``Location``) is read back with a GET; an
        answer that still cannot be trusted counts as a lost answer, resolved by
        looking the object up by externalId before any new attempt."""
        body = answer.body if isinstance(answer.body, Mapping) else {}
        pbx_id = valid_pbx_id(body.get("id"))
        if pbx_id is not None and created_answer_agrees(body, answer.headers, operation.external_id, pbx_id):
            return PbxOutcome(operation, pbx_id, answer.etag)
        if pbx_id is not None:
            try:
                stored = await self.get(operation.kind, pbx_id)
            except PbxRequestFailed:
                stored = None
            if stored is not None and stored.external_id == operation.external_id:
                return PbxOutcome(operation, pbx_id, stored.etag)
        raise AnswerLost(RetryableFailure(f"the PBX answered 201 to {operation.describe()} without an id it serves "
                                          f"({str(body.get('id'))[:40]!r})", status=answer.status))

    async def _converge(self, operation: PbxOperation, payload: Payload, current: PbxObject, *,
                        adopted: bool) -> PbxOutcome:
        """Bring an existing object to ``payload`` in what we manage (adopt, recover)."""
        update = replace(operation, action="update", pbx_id=current.id, etag=current.etag, maybe_applied=False,
                         operations=patch_operations(managed_view(current.data, payload), payload))
        outcome = await self._update(update)
        return replace(outcome, operation=operation, adopted=adopted)

    async def _adopt_or_refuse(self, operation: PbxOperation, payload: Payload, answer: Answer) -> PbxOutcome:
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
            outcome = await self._converge(operation, payload, current, adopted=True)
            log.info("adopted an existing PBX object", kind=kind, pbx_id=current.id, external_id=operation.external_id)
            return outcome
        raise await self._conflict(operation, payload, answer)

    async def _conflict(self, operation: PbxOperation, payload: Mapping[str, Any], answer: Answer) -> PbxConflict:
        """A uniqueness conflict that is not adoptable: name the extension number if that is it."""
        path = EXTENSION_NUMBER_PATHS.get(operation.kind)
        number = _extension_number(payload, path) if path else None
        if path and number:
            holders = await self.find(operation.kind, path, number)
            holders = [h for h in holders if h.external_id != operation.external_id]
            if holders:
                return ExtensionTaken(
                    f"extension {number} is already used on the PBX by {operation.kind} {holders[0].id}; "
                    f"{operation.kind} {operation.external_id} was not written",
                    status=409,
                    detail=answer.detail,
                    hint="numbered again from the PBX's numbers",
                )
        return PbxConflict(
            f"the PBX refused {operation.describe()} ({answer.code})", status=409, detail=answer.detail
        )

    async def _update(self, operation: PbxOperation) -> PbxOutcome:
        if operation.pbx_id is None:
            raise PbxRequestFailed(f"{operation.describe()}: no PBX id to update")
        if operation.maybe_applied and operation.payload is not None:
            current = await self.get(operation.kind, operation.pbx_id)  # what did the lost PATCH do?
            if current is None:
                return await self._recreate(operation)
            return await self._converge(operation, operation.payload, current, adopted=False)
        if not operation.operations:
            return PbxOutcome(operation, operation.pbx_id, operation.etag)
        etag = operation.etag
        config = await self.discover()
        for attempt in (1, 2):
            headers = {"If-Match": etag} if (config.etag and etag) else {}
            body = {"schemas": [PATCH_OP], "Operations": list(operation.operations)}
            answer = await self._request("update", "PATCH", f"{ENDPOINTS[operation.kind]}/{operation.pbx_id}",
                                         body=body, headers=headers, idempotent=False)
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
            raise refused(operation, answer)
        raise PbxRequestFailed(f"{operation.describe()}: the PBX kept answering 412", status=412)

    async def _recreate(self, operation: PbxOperation) -> PbxOutcome:
        """The PBX lost an object we manage: create it again from the full payload. A write
        without one (a busy list) finds it by externalId: the id held may be one a /Bulk
        ``location`` named that the PBX never served."""
        if operation.payload is None:
            existing = await self.find_by_external_id(operation.kind, operation.external_id)
            if existing is not None and existing.id != operation.pbx_id:
                log.warning("the object lives under another id than the one recorded; writing it there",
                            operation=operation.describe(), pbx_id=existing.id)
                return await self._update(replace(operation, pbx_id=existing.id, etag=existing.etag, maybe_applied=False))
            raise PbxRequestFailed(f"{operation.describe()}: the PBX lost the object and no payload was given to recreate it", status=404)
        log.warning("the PBX lost an object; looking it up by externalId, else recreating it",
                    operation=operation.describe())
        # The id we hold may be one the PBX never served (an untrustworthy answer): the object
        # may well exist under its real id, so it is looked up before anything is created.
        outcome = await self._create(replace(operation, action="create", maybe_applied=True))
        return replace(outcome, operation=operation, recreated=not outcome.adopted)

    async def _delete(self, operation: PbxOperation) -> PbxOutcome:
        if operation.pbx_id is None:
            return PbxOutcome(operation)  # never created: nothing to delete
        if operation.maybe_applied and await self.get(operation.kind, operation.pbx_id) is None:
            return await self._delete_by_external_id(operation)  # the lost DELETE was applied (or the id was wrong)
        answer = await self._request("delete", "DELETE", f"{ENDPOINTS[operation.kind]}/{operation.pbx_id}")
        if answer.status == 404:
            return await self._delete_by_external_id(operation)
        if answer.status in (200, 204):
            return PbxOutcome(operation, operation.pbx_id)
        raise refused(operation, answer)

    async def _delete_by_external_id(self, operation: PbxOperation) -> PbxOutcome:
        """Gone under the id we hold, which is what we wanted, unless that id was not its real one."""
        existing = await self.find_by_external_id(operation.kind, operation.external_id)
        if existing is not None and existing.id != operation.pbx_id:
            log.warning("the object lives under another id than the one recorded; deleting that one",
                        operation=operation.describe(), pbx_id=existing.id)
            return await self._delete(replace(operation, pbx_id=existing.id, maybe_applied=False))
        return PbxOutcome(operation, operation.pbx_id)

    # --- bulk ---

    async def _execute_maybe_applied(self, operation: PbxOperation) -> PbxOutcome:
        """Execute a write that may have been applied already; the outcome names the original."""
        outcome = await self.execute(replace(operation, maybe_applied=True))
        return replace(outcome, operation=operation)

    async def _bulk(self, chunk: Sequence[PbxOperation], body: bytes | None = None) -> AsyncIterator[PbxOutcome]:
        """One ``/Bulk`` request of ``chunk`` (``body``: already encoded by ``bulk_requests``)."""
        config = await self.discover()
        try:
            answer = await self._request("bulk", "POST", "/Bulk", body=body or bulk_body(chunk, config.etag),
                                         idempotent=False,
                                         timeout=self.bulk_timeout(len(chunk)))
        except AnswerLost as lost:
            log.info("the PBX's answer to a bulk request was lost; resolving each write by reading",
                     operations=len(chunk), reason=lost.failure.reason)
            for operation in chunk:
                yield await self._execute_maybe_applied(operation)
            return
        if answer.status == 413 and len(chunk) > 1:  # the PBX's limit was lower than announced
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                async for outcome in self._bulk(part):
                    yield outcome
            return
        results = bulk_results(answer.body, chunk, self.base_url) if answer.status == 200 else None
        if results is None:
            # Not a bulk response (a 4xx, or a body that is not one): the PBX may still have
            # applied some of it, so each write is resolved by reading, never sent again blindly.
            log.warning("the PBX's answer to a bulk request cannot be read; resolving each write by reading",
                        status=answer.status, operations=len(chunk))
            for operation in chunk:
                yield await self._execute_maybe_applied(operation)
            return
        for operation, result in zip(chunk, results, strict=True):
            applied = 200 <= result.status < 300 or (operation.action == "delete" and result.status == 404)
            if applied and (result.pbx_id is not None or operation.action != "create"):
                yield PbxOutcome(operation, result.pbx_id, result.version)
            elif applied or result.status == 0 or result.status >= 500:  # unknown id, or unknown whether applied
                yield await self._execute_maybe_applied(operation)
            elif result.status == 409 and operation.action == "create":
                yield await self._bulk_conflict(operation, result.answer)
            elif result.status in (404, 409, 412, 429) or (result.status == 400 and without_photos(operation)):
                yield await self.execute(operation)  # the full single-object rules apply
            else:
                error = PbxRequestFailed(f"the PBX refused {operation.describe()} ({result.code})",
                                         status=result.status, detail=result.detail)
                log.warning("PBX refused an object", operation=operation.describe(), error=str(error),
                            detail=result.detail)
                yield PbxOutcome(operation, operation.pbx_id, None, error)

    async def _bulk_conflict(self, operation: PbxOperation, answer: Answer) -> PbxOutcome:
        """A create that /Bulk answered 409: resolved as a single POST's 409 is (ours is adopted,
        anything else is a recorded conflict) from the result itself, never POSTed again."""
        try:
            outcome = await self._adopt_or_refuse(operation, required_payload(operation), answer)
        except (PbxConflict, PbxRequestFailed) as err:
            log.warning("PBX refused an object", operation=operation.describe(), error=str(err))
            return PbxOutcome(operation, operation.pbx_id, None, err)
        except AnswerLost:  # adopting it, an answer was lost: resolved by reading first
            return await self._execute_maybe_applied(operation)
        except RetryableFailure as failure:
            raise self._unavailable(operation.action, failure) from failure
        return replace(outcome, operation=operation)


# --- helpers ---


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


__all__ = [
    "DEFAULT_TIMEOUT",
    "RETRYABLE_STATUSES",
    "AnswerLost",
    "PbxClient",
    "PbxObject",
    "PbxOperation",
    "PbxOutcome",
    "PbxWriter",
    "ProviderConfig",
]
