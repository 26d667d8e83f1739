"""Which daemon syncs which tenant, when several share one PostgreSQL state.

PostgreSQL decides, not a consensus of our own: a tenant's runs, polls and
writes happen only while this daemon's lease session holds the tenant's
session-level advisory lock. A daemon that dies, or whose connection is cut,
loses its locks with its session, at once.

Who should own a tenant is rendezvous hashing over the live daemons. A
daemon is live while its session holds its own instance lock (so a killed
daemon leaves the set as soon as PostgreSQL sees its connection end), and
every ``lease_seconds / 3`` each daemon looks at who is live, then takes the free locks
of the tenants it should own and gives back (between runs) those another
daemon should own now. A dead daemon's tenants are so taken over within one
lease interval. A daemon whose session was cut stands back for one lease
interval before it connects again, so its tenants move to the others rather
than flap back and forth with a flaky network; it then gets its share back
between their runs.

Before each PBX write request (``PbxConnection.may_write``), :meth:`SharedLeases.check`
asks the lease session whether it is still alive; if it is not, the run stops writing
(:class:`~daemon.errors.LeaseLost`), and the create journal makes the new
owner's run look objects up instead of creating them twice.

Sync now and authorizations reach the owner by ``NOTIFY m365sync`` on the
same session (:meth:`SharedLeases.forward`).

With SQLite there is one daemon: :class:`LocalLeases` holds every tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from daemon.errors import LeaseLost, M365SyncError
from daemon.logging import get_logger
from daemon.scheduler import SchedulerClock
from state.postgres import read_password

log = get_logger(__name__)

CHANNEL = "m365sync"
# A granted session-level advisory lock on a bigint key, in this database, and that key (the
# shift wraps to the signed value pg_advisory_lock was given).
ADVISORY_HERE = ("l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"
                 " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
LOCK_OF_ROW = "((l.classid::bigint << 32) | l.objid::bigint)"


def lock_key(name: str, space: str = "tenant") -> int:
    """A stable signed 64-bit advisory lock key (the same in every daemon)."""
    digest = hashlib.sha256(f"m365sync {space} {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def rendezvous_owner(tenant: str, instances: Iterable[str]) -> str | None:
    """The live instance that should own ``tenant``: the highest hash of (instance, tenant).
    When an instance goes, only its tenants move; when one comes, it takes only its share."""
    return max(instances, key=lambda name: hashlib.sha256(f"{name}\0{tenant}".encode()).digest(), default=None)


def default_instance_name(port: int) -> str:
    return f"{socket.gethostname()}:{port}"


class LeaseEvents(Protocol):
    """What a lease session tells the rest of the daemon (``daemon.ownership`` answers);
    given to :class:`SharedLeases` at construction, as its ``on_*`` and ``busy`` callbacks."""

    def lease_acquired(self, tenant: str) -> None: ...

    def lease_released(self, tenant: str) -> None: ...

    def leases_lost(self, count: int) -> None: ...

    def message(self, message: Mapping[str, Any]) -> None: ...

    def busy(self, tenant: str) -> bool: ...


class Leases(Protocol):
    instance: str
    shared: bool

    def retry_after(self) -> float: ...

    def holds(self, tenant: str) -> bool: ...

    async def check(self, tenant: str) -> None: ...

    async def owners(self) -> dict[str, str]: ...

    async def forward(self, tenant: str, message: Mapping[str, Any]) -> bool: ...

    def set_tenants(self, tenants: Iterable[str]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class LocalLeases:
    """One daemon on one SQLite file: it owns every tenant."""

    instance: str = "local"
    shared: bool = False

    def holds(self, tenant: str) -> bool:
        return True

    def retry_after(self) -> float:
        return 0.0

    async def check(self, tenant: str) -> None:
        return None

    async def owners(self) -> dict[str, str]:
        return {}

    async def forward(self, tenant: str, message: Mapping[str, Any]) -> bool:
        return False

    def set_tenants(self, tenants: Iterable[str]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@dataclass
class SharedLeases:
    """Tenant leases on a PostgreSQL state, through one session of this daemon's own."""

    url: str
    instance: str
    lease_seconds: float
    clock: SchedulerClock
    password_file: Path | None = None
    public_url: str | None = None
    on_acquired: Callable[[str], None] = lambda tenant: None
    on_released: Callable[[str], None] = lambda tenant: None
    on_lost: Callable[[int], None] = lambda count: None  # leases lost with the session, not handed over
    on_message: Callable[[Mapping[str, Any]], None] = lambda message: None
    busy: Callable[[str], bool] = lambda tenant: False  # a run in progress: the lease is kept until it ends
    shared: bool = True
    held: set[str] = field(default_factory=set)
    tenants: set[str] = field(default_factory=set)
    _conn: asyncpg.Connection | None = None
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task[None] | None = None
    _lost_at: float | None = None

    # --- what the rest of the daemon asks ---

    def holds(self, tenant: str) -> bool:
        return tenant in self.held and self._conn is not None and not self._conn.is_closed()

    def retry_after(self) -> float:
        """Seconds until some daemon should hold a tenant no daemon holds now: this one's
        stand-back after a cut session (if any), then one lease round, when the others take over."""
        standing_back = 0.0 if self._lost_at is None else self.lease_seconds - (self.clock.time() - self._lost_at)
        return max(0.0, standing_back) + self.lease_seconds / 3

    async def check(self, tenant: str) -> None:
        """Raise LeaseLost unless this daemon still holds the tenant's lock (asks the server)."""
        if self._conn is not None and self._conn.is_closed():
            # The session ended, and its termination listener has not run yet (it is called soon, not
            # now): record the loss before saying so, so that whoever catches LeaseLost sees it lost.
            self._lost("the lease session ended")
        if not self.holds(tenant):
            raise LeaseLost(f"this daemon ({self.instance}) no longer holds tenant {tenant}; another daemon syncs it")
        async with self._turn:
            try:
                assert self._conn is not None
                await self._conn.fetchval("SELECT 1")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as err:
                self._lost(f"the lease session failed: {err or type(err).__name__}")
                raise LeaseLost(f"this daemon ({self.instance}) lost its PostgreSQL lease session; "
                                f"tenant {tenant} goes to another daemon") from err

    async def owners(self) -> dict[str, str]:
        """tenant -> instance holding its lock now (every daemon of the state)."""
        if self._conn is None or self._conn.is_closed():
            return {}
        keys = {lock_key(t): t for t in self.tenants}
        async with self._turn:
            rows = await self._conn.fetch(f"SELECT i.name, {LOCK_OF_ROW} FROM pg_locks l JOIN instances i"
                                          f" ON i.backend_pid = l.pid WHERE {ADVISORY_HERE}")
        return {keys[key]: str(name) for name, key in rows if key in keys}

    async def forward(self, tenant: str, message: Mapping[str, Any]) -> bool:
        """Send ``message`` (a Sync now, an authorization) to the tenant's owner; False if none is live."""
        if self._conn is None or self._conn.is_closed():
            return False
        owner = (await self.owners()).get(tenant)
        if owner is None:
            return False
        payload = json.dumps({**message, "tenant": tenant, "to": owner, "from": self.instance})
        async with self._turn:
            await self._conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        return True

    def set_tenants(self, tenants: Iterable[str]) -> None:
        """The configured tenants (start-up, reload): locks of removed ones go at the next round."""
        self.tenants = set(tenants)

    # --- the lease session ---

    async def start(self) -> None:
        """Connect, register, take this daemon's share: the start-up runs know what they own."""
        await self._connect()
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()  # every lock goes with the session
        self._conn = None
        for tenant in self.held:
            self.on_released(tenant)
        self.held.clear()

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.lease_seconds / 3)
            try:
                await self.refresh()
            except Exception as err:  # a failed round must not end the leasing
                self._lost(f"lease round failed: {err or type(err).__name__}")

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.url, password=read_password(self.password_file))
        key = lock_key(self.instance, "instance")
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            await conn.close()
            raise M365SyncError(f"another running daemon already calls itself {self.instance}",
                                hint="give each daemon its own [state] instance_name")
        now = self.clock.time()
        await conn.execute(
            "INSERT INTO instances (name, lock_key, backend_pid, url, started_at)"
            " VALUES ($1, $2, pg_backend_pid(), $3, $4) ON CONFLICT (name) DO UPDATE SET"
            " lock_key = excluded.lock_key, backend_pid = excluded.backend_pid, url = excluded.url,"
            " started_at = excluded.started_at",
            self.instance, key, self.public_url, now)
        conn.add_termination_listener(lambda _: self._lost("the lease session ended"))
        await conn.add_listener(CHANNEL, self._notified)
        self._conn = conn
        self._lost_at = None
        log.info("lease session opened", instance=self.instance)

    def _lost(self, reason: str) -> None:
        if self._lost_at is None:
            self._lost_at = self.clock.time()
        if self.held:
            log.error("tenant leases lost; writing stops for them", instance=self.instance, reason=reason,
                      tenants=sorted(self.held))
            self.on_lost(len(self.held))
        for tenant in self.held:
            self.on_released(tenant)
        self.held.clear()
        if self._conn is not None and self._conn.is_closed():
            self._conn = None

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        try:
            message = json.loads(str(payload))
        except ValueError:
            return
        if isinstance(message, dict) and message.get("to") == self.instance:
            self.on_message(message)

    async def refresh(self) -> None:
        """One round: take and give back locks by rendezvous over the live daemons (liveness is the held instance lock)."""
        if self._conn is None or self._conn.is_closed():
            self._lost("the lease session is closed")
            if self._lost_at is not None and self.clock.time() - self._lost_at < self.lease_seconds:
                return  # stand back one lease interval: the other daemons take the tenants over meanwhile
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                log.warning("cannot open the lease session; owning no tenant until it opens",
                            instance=self.instance, error=str(err) or type(err).__name__)
                return
        acquired = []
        async with self._turn:
            conn = self._conn
            assert conn is not None
            live = [str(row[0]) for row in await conn.fetch(
                f"SELECT i.name FROM instances i JOIN pg_locks l ON l.pid = i.backend_pid AND {ADVISORY_HERE}"
                f" AND {LOCK_OF_ROW} = i.lock_key")]
            for tenant in sorted(self.tenants | self.held):
                wanted = tenant in self.tenants and rendezvous_owner(tenant, live) == self.instance
                if wanted and tenant not in self.held:
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(tenant)):
                        self.held.add(tenant)
                        acquired.append(tenant)
                elif not wanted and tenant in self.held and not self.busy(tenant):
                    await conn.fetchval("SELECT pg_advisory_unlock($1)", lock_key(tenant))
                    self.held.discard(tenant)
                    self.on_released(tenant)
                    log.info("tenant handed over", tenant=tenant, instance=self.instance)
        for tenant in acquired:
            log.info("tenant lease taken", tenant=tenant, instance=self.instance)
            self.on_acquired(tenant)
