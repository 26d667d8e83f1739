"""A proxy before a SCIM server that counts the writes it applied, and can
rewrite its answers (a fault injector for the answers the daemon must not trust)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

# (method, path, request body, status, answer body) -> (status, answer body)
Rewrite = Callable[[str, str, Any, int, Any], tuple[int, Any]]
DROP = -1  # a rewritten status that means: close the connection without an answer (the write was applied)


class RewritingProxy:
    """Forwards to a SCIM server (which applies every write), then rewrites its answer.

    ``writes`` notes every write the server applied (a 2xx), inside /Bulk one
    entry per operation (results in request order, as both servers keep it):
    ``POST /Users <externalId>``, ``PATCH /Users/<id>``; so a write sent twice shows."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.rewrite: Rewrite | None = None
        self.refuse: Callable[[str, Any], bool] | None = None  # (method, body): answered 400, never forwarded
        self.writes: list[str] = []
        self.rewritten = 0

    def note(self, method: str, path: str, body: Any, status: int, answer: Any) -> None:
        if path.endswith("/Bulk"):
            results = answer.get("Operations", []) if isinstance(answer, dict) else []
            operations = body.get("Operations", [])
            for index, op in enumerate(operations):
                result = results[index] if len(results) == len(operations) else {"status": "200"}
                self.note(op["method"], op["path"], op.get("data"), int(result.get("status") or 0), None)
        elif method != "GET" and 200 <= status < 300:
            key = f"{method} /{path.rsplit('/v2/', 1)[-1].lstrip('/')}"
            self.writes.append(f"{key} {body.get('externalId')}" if method == "POST" else key)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        if self.refuse is not None and self.refuse(request.method, body):
            return web.json_response({"status": "400", "scimType": "invalidValue", "detail": "photos.value"},
                                     status=400, content_type="application/scim+json")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with aiohttp.ClientSession() as session:
            url = self.target + request.path_qs.split("/v2", 1)[1]
            async with session.request(request.method, url, data=raw, headers=headers) as answer:
                status, payload = answer.status, await answer.read()
                etag = answer.headers.get("ETag")
        parsed = json.loads(payload) if payload else None
        self.note(request.method, request.path, body, status, parsed)
        if self.rewrite is not None:
            new_status, new_body = self.rewrite(request.method, request.path, body, status, parsed)
            if (new_status, new_body) != (status, parsed):
                self.rewritten += 1
                status, parsed = new_status, new_body
        if status == DROP:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=204)
        if isinstance(parsed, str):  # not JSON at all
            return web.Response(status=status, text=parsed, content_type="text/html")
        out = {"ETag": etag} if etag else {}
        return web.Response(status=status, body=json.dumps(parsed).encode() if parsed is not None else b"",
                            headers=out, content_type="application/scim+json")

    def written_twice(self) -> list[str]:
        return [write for write, n in Counter(self.writes).items() if n > 1]


@asynccontextmanager
async def rewriting_proxy(target: str) -> AsyncIterator[tuple[RewritingProxy, str]]:
    """A proxy before ``target`` (a SCIM base URL ending in /v2); yields it and its own base URL."""
    proxy = RewritingProxy(target)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    http = TestServer(app, host="127.0.0.1")
    await http.start_server()
    try:
        yield proxy, str(http.make_url("/v2"))
    finally:
        await http.close()


# --- answers spoiled one write at a time (the property test's fault injector) ---

ANSWER_FAULTS = ("none", "missing-id", "unknown-id", "non-json", "partial-bulk", "400-after-apply", "drop")


def answer_faults(faults: list[str]) -> Rewrite:
    """Each write's answer spoiled by the next of ``faults`` (none once they run out); the PBX
    applied the write all the same. Reads pass untouched."""
    pending = list(faults)

    def rewrite(method: str, path: str, _: Any, status: int, body: Any) -> tuple[int, Any]:
        if method == "GET" or not pending:
            return status, body
        fault, bulk = pending.pop(0), path.endswith("/Bulk")
        if fault == "drop":
            return DROP, None
        if fault == "400-after-apply":
            return 400, {"status": "400", "detail": "bad request"}
        if fault == "non-json":
            return (200 if status == 204 else status), "<html>upstream answered</html>"
        if not isinstance(body, dict):
            return status, body
        if bulk and fault == "partial-bulk":
            results = body.get("Operations", [])
            return status, {**body, "Operations": results[:len(results) // 2]}
        if bulk and fault in ("missing-id", "unknown-id"):
            return status, {**body, "Operations": [_spoiled_location(r, fault) for r in body.get("Operations", [])]}
        if method == "POST" and status == 201 and fault == "missing-id":
            return status, {k: v for k, v in body.items() if k != "id"}
        if method == "POST" and status == 201 and fault == "unknown-id":
            return status, body | {"id": uuid.uuid4().hex}
        return status, body

    return rewrite


def _spoiled_location(result: dict[str, Any], fault: str) -> dict[str, Any]:
    """A /Bulk POST result without its location, or naming an id the PBX never served."""
    if result.get("method") != "POST" or "location" not in result:
        return result
    if fault == "missing-id":
        return {k: v for k, v in result.items() if k != "location"}
    return result | {"location": f"{str(result['location']).rsplit('/', 1)[0]}/{uuid.uuid4().hex}"}
