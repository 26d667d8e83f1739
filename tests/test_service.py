"""The running service: /healthz, /readyz, /metrics, and promtool's verdict."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from conftest import basic_config, require_tool, tenant_toml
from daemon.config import load_config
from daemon.errors import M365SyncError
from daemon.service import Service

WriteConfig = Callable[[str], Path]


@pytest.fixture
async def service(write_config: WriteConfig) -> AsyncIterator[Service]:
    tenants = tenant_toml("alpha") + tenant_toml("beta") + tenant_toml("parked", extra="enabled = false")
    service = Service(load_config(write_config(basic_config(tenants))), environ={}, schedule=False)
    await service.start()
    yield service
    await service.stop()


async def get(service: Service, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{service.bound_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_healthz_answers_200(service: Service) -> None:
    status, _, body = await get(service, "/healthz")
    assert (status, body) == (200, '{"status": "ok"}')


async def test_readyz_is_503_with_a_reason_per_tenant_until_authorized(service: Service) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{service.bound_port}/readyz"
        async with session.get(url) as response:
            assert response.status == 503
            body = await response.json()
    assert body["ready"] is False
    assert body["tenants"]["alpha"]["reason"] == "authorization_required"
    assert "m365sync authorize" in body["tenants"]["alpha"]["detail"]
    assert body["tenants"]["parked"] == {
        "enabled": False,
        "ready": False,
        "reason": "disabled",
        "detail": "enabled = false in the config",
    }
    await service.store.set_auth_state("alpha", "authorized")
    await service.store.set_auth_state("beta", "authorized")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200  # the disabled tenant does not block readiness
        assert (await response.json())["tenants"]["beta"]["ready"] is True


async def test_readyz_names_an_unusable_secret_file(service: Service, config_dir: Path) -> None:
    (config_dir / "pbx-token").chmod(0o644)
    await service.store.set_auth_state("alpha", "authorized")
    status, _, body = await get(service, "/readyz")
    assert status == 503
    assert '"reason": "secret_file_unusable"' in body and "chmod 600" in body


async def test_metrics_exposes_build_info_process_and_readiness(service: Service) -> None:
    await service.store.set_auth_state("beta", "authorized")
    status, content_type, text = await get(service, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert 'm365sync_build_info{python="' in text
    assert 'm365sync_tenant_ready{tenant="alpha"} 0.0' in text
    assert 'm365sync_tenant_ready{tenant="beta"} 1.0' in text
    assert "process_resident_memory_bytes" in text


async def test_metrics_pass_promtool(service: Service, tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    _, _, text = await get(service, "/metrics")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


async def test_unknown_path_is_404(service: Service) -> None:
    status, _, _ = await get(service, "/nope")
    assert status == 404


async def test_port_in_use_is_a_clear_error(service: Service, write_config: WriteConfig) -> None:
    text = basic_config(server=f'listen = "127.0.0.1:{service.bound_port}"').replace(
        'path = "state.db"', 'path = "other.db"'
    )
    second = Service(load_config(write_config(text)), environ={})
    with pytest.raises(M365SyncError, match="address already in use"):
        await second.start()
