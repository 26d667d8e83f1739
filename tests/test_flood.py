"""The HTTP server cannot be starved (issue 20 item 8): the real daemon, at the
unit's LimitNOFILE, answers /healthz within 2 s while 1,000 idle and 100
slow-header connections are open; in-process, with short limits, the
header-read and idle timeouts close what sends no request, the connection
cap makes room by closing the longest-waiting connection, and a declared
body over the limit is refused on any route."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from conftest import REPO, basic_config
from daemon.health import TenantStatus
from daemon.http_guard import MAX_CONNECTIONS, ConnectionGuard, GuardedServer, Limits
from daemon.metrics import Metrics
from daemon.server import build_app

UNIT = REPO / "contrib" / "systemd" / "m365sync.service"
IDLE, SLOW = 1000, 100
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def unit_nofile() -> int:
    match = re.search(r"^LimitNOFILE=(\d+)$", UNIT.read_text(), re.MULTILINE)
    assert match, "the unit sets LimitNOFILE"
    return int(match.group(1))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthz_seconds(port: int, timeout: float) -> tuple[bytes, float]:
    """(status line, seconds) of one /healthz on a fresh connection."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(HEALTHZ)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0], time.monotonic() - started


def closed_by_server(sock: socket.socket) -> bool:
    """Without waiting (the socket is non-blocking): has the server closed it?"""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture
def daemon_port(write_config: Callable[[str], Path]) -> Iterator[int]:
    """``m365sync run`` as its own process, its descriptors limited as the unit limits them."""
    limit = unit_nofile()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.fail(f"this machine's hard descriptor limit ({hard}) is below the unit's LimitNOFILE ({limit})")
    port = free_port()
    config = write_config(basic_config(server=f'listen = "127.0.0.1:{port}"'))
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard)),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if healthz_seconds(port, 5)[0].endswith(b"200 OK"):
                    break
            assert time.monotonic() < deadline and process.poll() is None, "the daemon did not start serving"
            time.sleep(0.05)  # polling a condition with a deadline
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_healthz_answers_within_2s_under_1000_idle_and_100_slow_header_connections(daemon_port: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE + SLOW + 200
    if soft < needed:  # the test's own side of 1,100 connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard) if hard != resource.RLIM_INFINITY else needed, hard))
    sockets: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            sockets.append(socket.create_connection(("127.0.0.1", daemon_port), timeout=10))
        for _ in range(SLOW):
            slow = socket.create_connection(("127.0.0.1", daemon_port), timeout=10)
            slow.sendall(b"GET /healthz HT")  # a partial request line, then nothing
            sockets.append(slow)
        for sock in sockets:
            sock.setblocking(False)
        status, seconds = healthz_seconds(daemon_port, 2.0)
        assert status.endswith(b"200 OK") and seconds < 2.0, (status, seconds)
        # The cap made room: the longest-waiting (idle) connections were closed, never more than needed.
        excess = IDLE + SLOW + 1 - MAX_CONNECTIONS
        deadline = time.monotonic() + 5
        while sum(closed_by_server(s) for s in sockets[:IDLE]) < excess and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition with a deadline
        closed = [closed_by_server(s) for s in sockets]
        assert sum(closed[:IDLE]) >= excess, sum(closed)
        assert not any(closed[-SLOW // 2:]), "the newest connections are not the ones closed"
    finally:
        for sock in sockets:
            sock.close()


# --- the guard in-process, with short limits ---


class NoTenants:
    async def tenant_statuses(self) -> list[TenantStatus]:
        return []


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[int, ConnectionGuard]]:
    guard = ConnectionGuard(Limits(header_timeout=0.3, idle_timeout=0.3, max_connections=4, max_body=1024))
    server = GuardedServer(build_app(NoTenants(), Metrics(), guard=guard), guard, shutdown_timeout=1.0)
    port = await server.start("127.0.0.1", 0)
    try:
        yield port, guard
    finally:
        await server.stop()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection within ``seconds`` (all it sent is read)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False


async def test_a_connection_that_never_finishes_its_headers_is_closed(guarded: tuple[int, ConnectionGuard]) -> None:
    port, guard = guarded
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HT")
    started = time.monotonic()
    assert await closed_within(reader, 5.0)
    assert time.monotonic() - started >= 0.25  # the header timeout, not at once
    assert guard.connections == {}
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(guarded: tuple[int, ConnectionGuard]) -> None:
    port, _ = guarded
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEALTHZ)
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    assert await closed_within(reader, 5.0)
    writer.close()


async def test_the_cap_closes_the_longest_waiting_connection_for_a_new_one(guarded: tuple[int, ConnectionGuard]) -> None:
    port, guard = guarded
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEALTHZ)
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    assert await closed_within(idle[0][0], 0.2)  # the oldest made room, well before its header timeout
    assert guard.evicted == 1 and len(guard.connections) == 4
    for _, idle_writer in idle:
        idle_writer.close()
    writer.close()


async def test_a_body_over_the_limit_is_refused_on_any_route(guarded: tuple[int, ConnectionGuard]) -> None:
    port, _ = guarded
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 413")
    writer.close()
