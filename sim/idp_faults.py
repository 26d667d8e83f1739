"""Faults of the fake identity platform's token endpoint, for the daemon's
edge to it (``daemon/auth/platform.py``): an endpoint that never answers,
answers that are not the documented shape, and an error that quotes the
request back, secrets included."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from sim.entra import entra_error

HANG = "hang"  # never answers (until the fault is cleared or the server stops)
ECHO = "echo"  # an Entra-shaped error whose error_description quotes the request body
NOT_JSON = "not_json"  # a 200 with an HTML page, as a captive portal or a misrouted proxy sends
EMPTY_ACCESS_TOKEN = "empty_access_token"  # 200 JSON whose access_token is ""
EXPIRES_IN_NOT_A_NUMBER = "expires_in_not_a_number"  # 200 JSON with "expires_in": "soon"
FAULTS = (HANG, ECHO, NOT_JSON, EMPTY_ACCESS_TOKEN, EXPIRES_IN_NOT_A_NUMBER)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenFaults:
    """``fault`` applies to every token request until cleared; ``echoed`` keeps
    the request bodies the echo fault quoted back."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.faulted = 0
        self.echoed: list[str] = []
        self._answer_again = asyncio.Event()

    def set(self, fault: str) -> None:
        assert fault in FAULTS, fault
        self.fault = fault
        self._answer_again.clear()

    def clear(self) -> None:
        """No fault any more; a hanging request ends (with a 503)."""
        self.fault = None
        self._answer_again.set()

    async def on_shutdown(self, _app: web.Application) -> None:
        self.clear()  # the server would otherwise wait for a hanging handler to finish

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.fault
        if fault is None or request.method != "POST" or not request.path.endswith("/oauth2/v2.0/token"):
            return await handler(request)
        self.faulted += 1
        if fault == HANG:
            await self._answer_again.wait()
            return web.Response(status=503)
        if fault == ECHO:
            # Entra's errors carry error, error_description, error_codes, timestamp, trace_id and
            # correlation_id; the description is free text, and an endpoint (or a proxy in front
            # of it) may quote the request there: client secret, refresh token, code verifier.
            body = await request.text()
            self.echoed.append(body)
            return entra_error(400, "invalid_request", 900144,
                               f"The request body must contain the following parameter: 'grant_type'. Request body: {body}")
        if fault == NOT_JSON:
            return web.Response(text="<html><body>Sign in to the network first</body></html>", content_type="text/html")
        if fault == EMPTY_ACCESS_TOKEN:
            return web.json_response({"token_type": "Bearer", "expires_in": 3600, "access_token": ""})
        return web.json_response({"token_type": "Bearer", "expires_in": "soon", "access_token": "at-shapeless"})
