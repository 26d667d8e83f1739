"""The real `m365sync run` process under a systemd-like supervisor: READY=1,
WATCHDOG=1, serving, then SIGTERM/SIGINT -> STOPPING=1 and exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import basic_config

WriteConfig = Callable[[str], Path]


def receive_until(sock: socket.socket, wanted: bytes) -> list[bytes]:
    messages: list[bytes] = []
    while wanted not in messages:
        messages.append(sock.recv(4096))
    return messages


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_daemon_notifies_serves_and_stops_cleanly(
    write_config: WriteConfig, tmp_path: Path, signum: signal.Signals
) -> None:
    with socket.socket(socket.AF_INET) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(basic_config(server=f'listen = "127.0.0.1:{port}"'))
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"}
        process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready = receive_until(notify, b"READY=1\nSTATUS=serving")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
                assert answer.status == 200
            receive_until(notify, b"WATCHDOG=1")
            process.send_signal(signum)
            stopping = receive_until(notify, b"STOPPING=1")
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert ready[-1] == b"READY=1\nSTATUS=serving"
    assert stopping[-1] == b"STOPPING=1"
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "m365sync stopped" in stderr
    assert (config.parent / "state.db").stat().st_mode & 0o777 == 0o600


def test_run_with_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\nlisten = "nowhere"\n')
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "server.listen" in result.stderr and "Traceback" not in result.stderr
