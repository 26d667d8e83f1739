"""A tenant's connections verify TLS with or without a ``ca_file``: without one they take aiohttp's
default verification (the system store), which must still refuse a certificate the system does not
trust; with one, that CA is trusted too."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from daemon.metrics import Metrics
from daemon.retry import Transport
from daemon.tls import transport_ssl_context
from sim.world import free_port


@pytest.fixture
async def https_url(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A local HTTPS server whose certificate a throwaway CA (written to ``ca.pem``) signed."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context).start()
    try:
        yield f"https://127.0.0.1:{port}/", ca_file
    finally:
        await runner.cleanup()


async def _get(url: str, ca_file: Path | None) -> str:
    async with aiohttp.ClientSession() as session:
        transport = Transport(session, "contoso", Metrics(served=False), ssl_context=transport_ssl_context(ca_file))
        async with session.get(url, ssl=transport.ssl) as response:
            return await response.text()


async def test_without_a_ca_file_an_untrusted_certificate_is_refused(https_url: tuple[str, Path]) -> None:
    url, _ = https_url
    assert transport_ssl_context(None) is None  # aiohttp's default verification, not a context of ours
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _get(url, None)


async def test_with_the_ca_file_the_certificate_is_trusted(https_url: tuple[str, Path]) -> None:
    url, ca_file = https_url
    assert await _get(url, ca_file) == "ok"
