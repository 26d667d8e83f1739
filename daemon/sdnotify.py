"""systemd's sd_notify datagram protocol, without libsystemd.

``Type=notify`` services tell systemd ``READY=1`` once they serve,
``WATCHDOG=1`` periodically while the event loop is alive, and ``STOPPING=1``
when they shut down. Outside systemd (no ``NOTIFY_SOCKET``) every call is a
no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

from daemon.logging import get_logger

log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Notifier:
    """Sends sd_notify messages to the socket named by ``NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send one datagram; returns whether it was sent. Never raises."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode("utf-8"))
        except OSError as err:
            log.warning("sd_notify failed", message=message, error=str(err))
            return False
        return True

    async def watchdog(self, sleep: Sleep = asyncio.sleep) -> None:
        """Send ``WATCHDOG=1`` at half the interval systemd asked for, forever.

        It runs on the event loop, so a blocked loop stops the pings and
        systemd restarts the service, which is the point of the watchdog.
        """
        if self.watchdog_interval is None or self.address is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await sleep(self.watchdog_interval / 2)


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET that is neither a path nor abstract", value=value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between required pings, or None when no watchdog is asked for."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process
    return int(usec) / 1_000_000
