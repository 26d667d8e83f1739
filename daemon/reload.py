"""``systemctl reload m365sync`` (SIGHUP): read the configuration again and
apply it without a restart.

The new file is validated first: a configuration with errors is refused,
logged with every problem, and the running one stays. Otherwise its tenants
(and ``[log]``) go to :meth:`daemon.supervisor.Supervisor.apply`.
``[server]`` and ``[state]`` (the address and the database) need a restart:
a change there is logged and ignored. systemd is told ``RELOADING=1`` first
and ``READY=1`` when done.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from daemon.config import load_config
from daemon.config_checks import log_findings
from daemon.errors import ConfigError, M365SyncError
from daemon.logging import get_logger
from daemon.sdnotify import Notifier
from daemon.supervisor import Supervisor

log = get_logger(__name__)


async def reload_config(supervisor: Supervisor, notifier: Notifier) -> bool:
    """Apply the configuration file as it is now; False when it was refused."""
    notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        return await _reload(supervisor)
    finally:
        notifier.notify("READY=1\nSTATUS=serving")


async def _reload(supervisor: Supervisor) -> bool:
    old = supervisor.config
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
    await supervisor.apply(replace(old, tenants=new.tenants, log=new.log, warnings=new.warnings))
    log.info("configuration reloaded", tenants=sorted(t.name for t in supervisor.config.tenants if t.enabled))
    return True


__all__ = ["reload_config"]
