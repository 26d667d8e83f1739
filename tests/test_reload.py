"""`systemctl reload` (SIGHUP): a changed schedule, an added tenant, a removed
tenant, and a configuration with errors refused; a running sync is never
dropped."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest
import structlog

from daemon.config import load_config
from daemon.reload import reload_config
from daemon.service import Service
from live_fixtures import LiveEnv, scheduled_service
from sim.generator import generate_tenant


async def until(condition: Callable[[], bool], limit: float = 20.0) -> None:
    """Let the event loop run (yielding, never sleeping on a timer) until ``condition`` holds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0)


@pytest.fixture
async def running(live_env: LiveEnv) -> AsyncIterator[Service]:
    generate_tenant(live_env.tenant, users=20, photo_fraction=0)
    async with scheduled_service(live_env) as service:
        yield service


async def test_a_configuration_with_errors_is_refused_and_the_old_one_stays(running: Service, live_env: LiveEnv) -> None:
    good = live_env.config.read_text()
    live_env.config.write_text(good.replace('sync_time = "0 */6 * * *"', 'sync_time = "every now and then"'))
    assert await reload_config(running.supervisor, running.notifier) is False
    assert running.config.tenants[0].sync_time == "0 */6 * * *" and "contoso" in running.supervisor.schedules


async def test_a_changed_schedule_applies_without_a_restart_or_a_run(running: Service, live_env: LiveEnv) -> None:
    schedule = running.supervisor.schedules["contoso"]
    await until(lambda: schedule.next_run is not None)
    runs = len(schedule.recent)
    live_env.config.write_text(live_env.config.read_text().replace('sync_time = "0 */6 * * *"',
                                                                   'sync_time = "*/5 * * * *"'))
    assert await reload_config(running.supervisor, running.notifier) is True
    assert running.supervisor.schedules["contoso"] is schedule  # the same schedule, now on the new crontab
    interval = running.metrics.registry.get_sample_value
    await until(lambda: interval("m365sync_schedule_interval_seconds", {"tenant": "contoso"}) == 300.0)
    assert schedule.next_run is not None and schedule.next_run - running.clock.time() <= 300
    assert len(schedule.recent) == runs and schedule.current is None and schedule.queued is None


async def test_an_added_tenant_is_scheduled_at_once(running: Service, live_env: LiveEnv) -> None:
    text = live_env.config.read_text()
    block = text[text.index("[[tenants]]"):]
    second = block.replace('name = "contoso"', 'name = "fabrikam"').replace(f"/{live_env.pbx_tenant}/", "/reload2/")
    live_env.config.write_text(text + "\n" + second)
    assert await reload_config(running.supervisor, running.notifier) is True
    schedule = running.supervisor.schedules["fabrikam"]
    startup = schedule.current or schedule.queued
    assert startup is not None
    assert (await schedule.wait(startup.run_id)).result == "success"


async def test_a_removed_tenant_finishes_its_running_sync_then_stops(running: Service, live_env: LiveEnv) -> None:
    schedule = running.supervisor.schedules["contoso"]
    gate = asyncio.Event()
    live_env.sim.faults.hang_pattern = "^/users/delta"  # the run waits on Graph...
    live_env.sim._hang = gate  # ...until the test lets it go
    run_id = await running.supervisor.request("contoso", "sync-now")
    assert run_id is not None
    await until(lambda: schedule.current is not None and schedule.current.run_id == run_id)
    text = live_env.config.read_text()
    live_env.config.write_text(text.replace("enabled = true\nsync_photo", "enabled = true\nsync_photo")
                               .replace("[[tenants]]\nname = \"contoso\"", "[[tenants]]\nname = \"contoso\"\nenabled = false"))
    reload = asyncio.ensure_future(reload_config(running.supervisor, running.notifier))
    await until(lambda: "contoso" not in running.supervisor.schedules)
    assert not reload.done()  # waiting for the run in progress
    gate.set()
    assert await reload is True
    progress = schedule.progress(run_id)
    assert progress is not None and progress.result == "success"  # finished, not dropped
    row = await running.store.run(run_id)
    assert row is not None and row.result == "success"


async def test_sighup_reloads_the_running_daemon(live_env: LiveEnv) -> None:
    service = Service(load_config(live_env.config), environ={})
    serving = asyncio.ensure_future(service.serve_until_stopped())
    await until(lambda: service.bound_port is not None and "contoso" in service.supervisor.schedules)
    live_env.config.write_text(live_env.config.read_text().replace('sync_time = "0 */6 * * *"',
                                                                   'sync_time = "*/10 * * * *"'))
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: service.config.tenants[0].sync_time == "*/10 * * * *")
    service.request_stop()
    await serving


async def test_what_only_check_config_refuses_is_logged_by_a_reload_never_refused(running: Service,
                                                                                   live_env: LiveEnv) -> None:
    text = live_env.config.read_text()
    live_env.config.write_text(text.replace('starting_extension_number = "1001"',
                                            'starting_extension_number = "1001"\nsync_type = "INCLUDE"'))
    with structlog.testing.capture_logs() as logs:
        assert await reload_config(running.supervisor, running.notifier) is True  # check-config exits 2 on it
    assert running.config.tenants[0].users.sync_type == "INCLUDE" and "contoso" in running.supervisor.schedules
    finding = next(e for e in logs if e.get("field") == "tenants[0].users.sync_type")
    assert finding["log_level"] == "warning" and "syncs nobody" in finding["problem"]
