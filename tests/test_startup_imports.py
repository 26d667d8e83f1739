"""What a ``sync --once`` process imports before its run, pinned by name rather than time:
each module below is a start-up cost that command does not need (bench/results/startup.md).
A change that imports one of them on that path again fails here; import it in the function
that needs it instead."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What daemon.cli's sync handler imports (the CLI, the config, logging, the commands and
# through them the runner), and what sync_once builds before it opens the state (its Metrics).
SYNC_ONCE_PATH = """
import asyncio, json, sys
import daemon.cli, daemon.config, daemon.logging, daemon.commands
daemon.cli._parser().parse_args(["sync", "--once"])

class StoresOpened(Exception):
    pass

def open_stores(config, metrics, **options):
    raise StoresOpened

daemon.commands.open_stores = open_stores
try:
    asyncio.run(daemon.commands.sync_once(None, None, dry_run=False))
except StoresOpened:
    pass
print(json.dumps({"modules": sorted(sys.modules), "version_read": "__version__" in vars(daemon)}))
"""

NOT_NEEDED = {
    "msal": "the token is read from the sealed cache while valid (daemon.auth.cached)",
    "requests": "MSAL's transport",
    "urllib3": "MSAL's transport",
    "daemon.auth.platform": "the bounds around MSAL's calls",
    "daemon.auth.manager": "the browser flow of authorize and the daemon's pages",
    "daemon.auth.pages": "the browser flow's pages",
    "aiohttp.web": "the daemon's HTTP server",
    "daemon.server": "the daemon's HTTP server",
    "daemon.service": "the daemon",
    "daemon.supervisor": "the daemon's tenants",
    "daemon.scheduler": "the daemon's schedules",
    "daemon.notify": "change notifications (the daemon's)",
    "daemon.status": "m365sync status",
    "daemon.history_view": "m365sync explain and history",
    "state.copy": "a dry run of a shared state, state copy",
    "asyncpg": "a PostgreSQL state",
    "cryptography.x509": "a certificate credential, when MSAL is asked",
    "prometheus_client": "the daemon's /metrics (daemon.metrics_export); a command's metrics are not served",
    "daemon.metrics_export": "the daemon's /metrics",
}


def test_sync_once_does_not_import_what_it_does_not_need() -> None:
    done = subprocess.run([sys.executable, "-c", SYNC_ONCE_PATH], capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    imported = set(found["modules"])
    assert "daemon.sync.runner" in imported and "aiohttp.client" in imported  # the path was really imported
    assert {name: why for name, why in NOT_NEEDED.items() if name in imported} == {}
    assert found["version_read"] is False  # --version and the metrics' first scrape read it (daemon.__getattr__)


def test_metrics_that_are_not_served_take_every_recording_and_keep_none() -> None:
    from daemon.metrics import Metrics

    metrics = Metrics(served=False)
    metrics.graph_requests.labels("contoso", "users", "200").inc()
    metrics.tenant_owner.labels(tenant="contoso", instance="a").set(1)
    metrics.tenant_owner.remove("contoso", "a")
    metrics.run_lateness.observe(1.5)
    metrics.leases_lost.inc()
    assert metrics.render() == b""
    with pytest.raises(TypeError):
        metrics.registry.collect()
