"""``m365sync demo``: the daemon on the example configuration, on this machine.

Until the sync engine exists this shows exactly what is real: the daemon
starts with a private state file, serves ``/healthz``, ``/readyz`` and
``/metrics``, and waits for authorization. It does not pretend to sync.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
from pathlib import Path

import aiohttp

from daemon.config import Config, ServerConfig
from daemon.logging import configure_logging
from daemon.service import Service


async def run_demo(config: Config, workdir: Path, listen: str | None, exit_after: bool) -> int:
    """Start, show the endpoints, then serve until Ctrl-C (or stop if ``exit_after``)."""
    config = _demo_config(config, workdir, listen)
    configure_logging("warning", "console")
    service = Service(config, environ={})
    await service.start()
    try:
        base = f"http://{_url_host(config.server.host)}:{service.bound_port}"
        print(f"m365sync is serving on {base} (state: {config.state.path})")
        async with aiohttp.ClientSession() as session:
            for path in ("/healthz", "/readyz"):
                async with session.get(base + path) as response:
                    body = await response.json()
                print(f"GET {path} -> {response.status} {body}")
        print()
        for tenant in await service.tenant_statuses():
            print(f"tenant {tenant.tenant}: {tenant.reason}: {tenant.detail}")
        print("\nNo sync runs until a tenant is authorized; nothing is sent to any PBX.")
        print(f"Metrics: {base}/metrics")
        if not exit_after:
            print("Press Ctrl-C to stop.")
            await _wait_for_interrupt()
    finally:
        await service.stop()
    return 0


def _demo_config(config: Config, workdir: Path, listen: str | None) -> Config:
    """The example config with a local state file and demo-only secret files."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tenants = []
    for tenant in config.tenants:
        token_file = workdir / f"{tenant.name}-pbx-token"
        _write_secret(token_file)
        pbx = tenant.pbx.model_copy(update={"token_file": token_file})
        tenants.append(tenant.model_copy(update={"pbx": pbx}))
    server = config.server
    if listen is not None:
        server = ServerConfig.model_validate({**server.model_dump(exclude_none=True), "listen": listen})
    return dataclasses.replace(
        config.with_state_path(workdir / "state.db"),
        server=server,
        tenants=tuple(tenants),
    )


def _write_secret(path: Path) -> None:
    if path.exists():
        return
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _wait_for_interrupt() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

