"""The HTTP server's defence against connection floods (issue 20 item 8).

At the default limit of 1,024 descriptors, 1,000 idle and 100 slow-header
connections made ``/healthz`` time out: aiohttp had no timeout for a client
that connects and never finishes its request headers (before 3.10 it does
not even start its keep-alive timer until the first request), and no cap on
connections. The listening socket therefore makes its connections through
:class:`ConnectionGuard`, which wraps each of aiohttp's request handlers in a
:class:`GuardedConnection` and

- closes a connection that has no request in progress ``header_timeout``
  after it opened (a client still sending its headers, or sending nothing),
  or ``idle_timeout`` after its last answer (an idle keep-alive connection);
- caps the connections at ``max_connections``: a new connection over the cap
  closes the one that has waited longest without a request in progress, and
  is itself closed only when every connection is in the middle of a request.
  A client that sends its request at once (a health check, a browser)
  is served however many connections merely sit there.

A connection is "in a request" from the moment aiohttp has parsed the
headers and the application's middleware (:meth:`ConnectionGuard.middleware`)
runs, until the handler has answered. The cap is far below the unit's
``LimitNOFILE`` (8,192), which keeps the rest of the descriptors as the
reserve for the daemon's own sockets and files (Graph, the PBX, the state
database). Bodies are limited on every route: a declared ``Content-Length``
over ``max_body`` is refused before the handler runs, and a body read
without one stops at the application's ``client_max_size``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

HEADER_TIMEOUT_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 15.0
MAX_CONNECTIONS = 1024
MAX_BODY_BYTES = 64 * 1024
BACKLOG = 1024  # a burst of connections waits in the kernel instead of being refused
# Request line and header fields over 8 KiB are refused with 400 (an OAuth callback's is ~2 KiB);
# an unread body is drained for at most 2 s before the connection is closed.
HANDLER_LIMITS: dict[str, Any] = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 64,
                                  "lingering_time": 2.0}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Limits:
    header_timeout: float = HEADER_TIMEOUT_SECONDS
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS
    max_body: int = MAX_BODY_BYTES


class GuardedConnection(asyncio.Protocol):
    """One connection: aiohttp's handler inside, our timer and request count around it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.requests_in_progress = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inner.connection_made(transport)
        self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.guard.closed(self)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def wait_for_request(self, seconds: float) -> None:
        """No request in progress: closed unless one arrives within ``seconds``."""
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(seconds, self.close)

    def begin_request(self) -> None:
        self.requests_in_progress += 1
        self._cancel_timer()

    def end_request(self) -> None:
        self.requests_in_progress -= 1
        if self.requests_in_progress == 0:
            self.wait_for_request(self.guard.limits.idle_timeout)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ConnectionGuard:
    """The protocol factory of the listening socket (see the module docstring)."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.factory: Callable[[], asyncio.Protocol] | None = None  # aiohttp's, set by serve()
        self.connections: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self._waiting: dict[GuardedConnection, None] = {}  # no request in progress, oldest first
        self.evicted = 0

    def __call__(self) -> GuardedConnection:
        assert self.factory is not None, "serve() sets aiohttp's handler factory"
        return GuardedConnection(self, self.factory())

    def opened(self, connection: GuardedConnection) -> None:
        if len(self.connections) >= self.limits.max_connections:
            oldest = next(iter(self._waiting), None)
            if oldest is None:  # every connection is in a request: this one waits for none of them
                connection.close()
                return
            self.evicted += 1
            self._forget(oldest)
            oldest.close()
        assert connection.transport is not None
        self.connections[connection.transport] = connection
        self._waiting[connection] = None
        connection.wait_for_request(self.limits.header_timeout)

    def closed(self, connection: GuardedConnection) -> None:
        self._forget(connection)

    def _forget(self, connection: GuardedConnection) -> None:
        self._waiting.pop(connection, None)
        if connection.transport is not None and self.connections.get(connection.transport) is connection:
            del self.connections[connection.transport]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while its request is handled; refuses declared bodies over the limit."""
        if request.content_length is not None and request.content_length > self.limits.max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=self.limits.max_body, actual_size=request.content_length,
                                                text=json.dumps({"error": "request body too large"}),
                                                content_type="application/json")
        connection = self.connections.get(request.transport) if request.transport is not None else None
        if connection is None:
            return await handler(request)
        self._waiting.pop(connection, None)
        connection.begin_request()
        try:
            return await handler(request)
        finally:
            connection.end_request()
            if connection.requests_in_progress == 0 and request.transport in self.connections:
                self._waiting[connection] = None


class GuardedServer:
    """An aiohttp application served through a :class:`ConnectionGuard`."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, shutdown_timeout: float) -> None:
        self.guard = guard
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                                    keepalive_timeout=guard.limits.idle_timeout, **HANDLER_LIMITS)
        self._listener: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the bound port (``port`` may be 0). OSError when the address cannot be used."""
        await self.runner.setup()
        self.guard.factory = self.runner.server
        self._listener = await asyncio.get_running_loop().create_server(self.guard, host, port, backlog=BACKLOG)
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, then let aiohttp finish and close the connections."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        await self.runner.cleanup()
