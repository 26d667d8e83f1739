"""Every run ends with a recorded result: faults outside a single object end the
run ``failed`` with a one-line reason, the run metric counts it, the log
context is cleared, and the counts are those of the writes actually applied."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import structlog

from daemon.config import load_config
from daemon.metrics import Metrics
from daemon.scheduler import RunProgress
from daemon.service import Service
from daemon.sync.kinds import RUN_KINDS, SyncRequest
from live_fixtures import LiveEnv
from sim.generator import generate_tenant

DEEP = b"[" * 100_000 + b"]" * 100_000


@dataclass
class RunEnv:
    live: LiveEnv
    service: Service
    runs: int = 0

    async def run(self) -> tuple[str, str | None, dict[str, object]]:
        """One run through the daemon's own path; (stored result, stored error, summary)."""
        self.runs += 1
        run_id = f"run{self.runs}"
        request = SyncRequest(self.service.config.tenants[0].name, RUN_KINDS, "test")
        result = await self.service.supervisor.sync_now(request, run_id, RunProgress(run_id, "test"))
        row = await self.service.store.run(run_id)
        assert row is not None and row.finished_at is not None, "the run record was left unfinished"
        assert row.result == result
        assert structlog.contextvars.get_contextvars() == {}, "tenant/run_id left bound"
        return result, row.error, row.summary


def failed_runs(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("m365sync_sync_runs_total", {"tenant": "contoso", "result": "failed"})
    return value or 0.0


@pytest.fixture
async def run_env(live_env: LiveEnv) -> AsyncIterator[RunEnv]:
    service = Service(load_config(live_env.config), environ={}, schedule=False)
    await service.start()
    try:
        yield RunEnv(live_env, service)
    finally:
        await service.stop()


async def test_non_numeric_numbers_from_the_pbx_fail_the_run_with_a_reason(run_env: RunEnv) -> None:
    generate_tenant(run_env.live.tenant, users=5, photo_fraction=0)

    def rewrite(method: str, path: str, body: bytes) -> bytes:
        return re.sub(rb'"totalResults":\s*\d+', b'"totalResults": "many"', body) if method == "GET" else body

    run_env.live.proxy.rewrite = rewrite
    result, error, _ = await run_env.run()
    assert result == "failed"
    assert error is not None and "totalResults" in error and "'many'" in error and "not a whole number" in error
    assert failed_runs(run_env.service.metrics) == 1


async def test_non_numeric_bulk_limits_fail_the_run_with_a_reason(run_env: RunEnv) -> None:
    generate_tenant(run_env.live.tenant, users=5, photo_fraction=0)

    def rewrite(method: str, path: str, body: bytes) -> bytes:
        if path.endswith("/ServiceProviderConfig"):
            config = json.loads(body)
            config["bulk"] = {"supported": True, "maxOperations": "lots", "maxPayloadSize": 1048576}
            return json.dumps(config).encode()
        return body

    run_env.live.proxy.rewrite = rewrite
    result, error, _ = await run_env.run()
    assert result == "failed" and error is not None and "bulk.maxOperations" in error
    assert failed_runs(run_env.service.metrics) == 1


async def test_deeply_nested_json_from_graph_fails_the_run(run_env: RunEnv) -> None:
    generate_tenant(run_env.live.tenant, users=5, photo_fraction=0)
    run_env.live.sim.fail_next(200, path_pattern="^/users/delta", raw_body=DEEP)
    result, error, _ = await run_env.run()
    assert result == "failed" and error is not None and "nested too deeply" in error
    assert failed_runs(run_env.service.metrics) == 1
    result, _, _ = await run_env.run()  # the fault is gone: the next run succeeds
    assert result == "success"


async def test_deeply_nested_json_from_the_pbx_fails_the_run(run_env: RunEnv) -> None:
    generate_tenant(run_env.live.tenant, users=5, photo_fraction=0)
    run_env.live.proxy.rewrite = lambda method, path, body: DEEP if method == "GET" else body
    result, error, _ = await run_env.run()
    assert result == "failed" and error is not None and "nested too deeply" in error
    assert failed_runs(run_env.service.metrics) == 1


async def test_a_full_disk_fails_the_run_then_the_next_run_catches_up(run_env: RunEnv) -> None:
    generate_tenant(run_env.live.tenant, users=20, photo_fraction=0)
    assert (await run_env.run())[0] == "success"
    for index in range(200):  # enough new rows to need new database pages
        run_env.live.tenant.add_user(f"00000000-0000-4000-9000-{index:012d}", displayName=f"New Hire {index}",
                                     userPrincipalName=f"hire{index}@contoso.example", accountEnabled=True,
                                     userType="Member", jobTitle="x" * 200)
    db = run_env.service._db
    assert db is not None
    async with db.conn.execute("PRAGMA page_count") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    await db.conn.execute(f"PRAGMA max_page_count = {row[0]}")  # the disk is full from now on
    result, error, _ = await run_env.run()
    assert result == "failed"
    assert error is not None and "cannot write the state database" in error and "full" in error
    assert failed_runs(run_env.service.metrics) == 1
    await db.conn.execute("PRAGMA max_page_count = 1073741823")  # space again
    result, _, summary = await run_env.run()
    assert result == "success" and summary["counts"] == {"user": {"create": 200}}


async def test_a_run_that_fails_mid_apply_reports_the_writes_it_applied(run_env: RunEnv) -> None:
    generate_tenant(run_env.live.tenant, users=40, photo_fraction=0)
    run_env.live.proxy.refuse_writes_after = 15  # then the PBX answers 503 to every write
    result, error, summary = await run_env.run()
    assert result == "failed" and error is not None and "503" in error
    assert summary["counts"] == {"user": {"create": 15}}
    assert failed_runs(run_env.service.metrics) == 1


async def test_a_wrong_directory_in_application_mode_fails_the_run_with_the_fix(live_env: LiveEnv) -> None:
    text = live_env.config.read_text()
    directory = re.search(r'directory_id = "([^"]+)"', text)
    assert directory is not None
    live_env.config.write_text(text.replace(directory.group(1), "99999999-9999-4999-9999-999999999999"))
    service = Service(load_config(live_env.config), environ={}, schedule=False)
    await service.start()
    try:
        env = RunEnv(live_env, service)
        result, error, _ = await env.run()
        assert result == "failed"
        assert error is not None and "99999999-9999-4999-9999-999999999999" in error and "national_cloud" in error
        assert failed_runs(service.metrics) == 1
    finally:
        await service.stop()


async def test_the_cli_prints_no_traceback_for_a_failed_run(live_env: LiveEnv) -> None:
    generate_tenant(live_env.tenant, users=3, photo_fraction=0)
    live_env.sim.fail_next(200, path_pattern="^/users/delta", raw_body=DEEP)
    code, out, err = await live_env.sync()
    assert code != 0
    assert "failed" in out and "nested too deeply" in out
    assert "Traceback" not in out + err
