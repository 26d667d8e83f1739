"""``systemctl reload m365sync`` (SIGHUP): read the configuration again and
apply it without a restart.

The new file is validated first: a configuration with errors is refused,
logged with every problem, and the running one stays. Otherwise tenants
that were added (or enabled) get their schedule, with a start-up run;
tenants that were removed (or disabled) stop being scheduled once a run in
progress has finished (it is never dropped; their state stays until
``m365sync disconnect``); tenants whose settings changed keep their schedule,
whose next due time is computed again, and their next run uses the new
settings. ``[server]`` and ``[state]`` (the address and the database) need a
restart: a change there is logged and ignored. systemd is told
``RELOADING=1`` first and ``READY=1`` when done.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from daemon.config import load_config
from daemon.config_checks import log_findings
from daemon.errors import ConfigError, M365SyncError
from daemon.logging import get_logger

if TYPE_CHECKING:
    from daemon.service import Service

log = get_logger(__name__)


async def reload_config(service: Service) -> bool:
    """Apply the configuration file as it is now; False when it was refused."""
    service.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        return await _reload(service)
    finally:
        service.notifier.notify("READY=1\nSTATUS=serving")


async def _reload(service: Service) -> bool:
    old = service.config
    try:
        new = await asyncio.to_thread(load_config, old.source)
    except ConfigError as err:
        log.error("configuration not reloaded: it has errors; the running one stays",
                  problems=[str(p) for p in err.problems])
        return False
    except M365SyncError as err:
        log.error("configuration not reloaded; the running one stays", error=str(err))
        return False
    log_findings(new)  # what check-config would report: logged, never a refusal
    if (new.server, new.state) != (old.server, old.state):
        log.warning("[server] and [state] changes need a restart; they are not applied by a reload")
    config = replace(old, tenants=new.tenants, log=new.log, warnings=new.warnings)
    before = {t.name: t for t in old.tenants if t.enabled}
    after = {t.name: t for t in config.tenants if t.enabled}
    service.config = config
    if service.auth is not None:
        service.auth.config = config
    service.ownership.leases.set_tenants(after)  # a shared state: leases of removed tenants go at the next round
    for tenant in config.tenants:
        if await service.store.register_tenant(tenant.name, tenant.directory_id, tenant.application_id):
            log.warning("application or directory ID changed; stored tokens dropped", tenant=tenant.name)
    for name in sorted(before.keys() - after.keys()):
        await service.stop_polls(name)
        schedule = service.schedules.pop(name, None)
        if schedule is not None:
            await schedule.retire()  # a run in progress finishes first
        log.info("tenant no longer scheduled (removed or disabled in the configuration)", tenant=name)
    for name in sorted(after.keys() - before.keys()):
        if service.schedule:
            service.start_tenant(after[name])
        log.info("tenant added by a reload", tenant=name)
    for name in sorted(before.keys() & after.keys()):
        if before[name] == after[name]:
            continue
        if service.auth is not None:
            service.auth.forget_app(name)  # msal's app was built from the old settings
        schedule = service.schedules.get(name)
        if schedule is not None:
            schedule.reschedule(after[name])
        if before[name].events != after[name].events:
            await service.stop_polls(name)
            if service.schedule:
                service.start_polls(after[name])
        log.info("tenant settings changed by a reload", tenant=name)
    await service.tenant_statuses()
    log.info("configuration reloaded", tenants=sorted(after))
    return True


__all__ = ["reload_config"]
