"""A real SCIM server as the PBX of the tests and the demo.

``scim2-server`` (PyPI) runs as a subprocess on a free loopback port, loaded
with VeloPBX's schemas and resource types (``daemon/pbx/schemas/``, linked from ``contrib/scim/``). It enforces
uniqueness, ETags, PATCH, filtering and bulk on its own, so the daemon's
SCIM client is proved against an independent implementation. Its access log
(stderr) is parsed into a request log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from daemon.pbx.schema import schema_file

START_TIMEOUT_SECONDS = 30.0
_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass(frozen=True)
class PbxRequest:
    method: str
    path: str
    status: int


class ScimServerError(RuntimeError):
    """scim2-server could not be started."""


class ScimServer:
    """One scim2-server process; with ``dynamic_tenants`` every test can use
    its own tenant (``/{tenant}/v2``) and so its own empty PBX."""

    def __init__(
        self,
        token: str = "pbx-test-token",
        schemas: Path | None = None,
        resource_types: Path | None = None,
        service_provider_config: dict[str, Any] | None = None,
        dynamic_tenants: bool = True,
    ) -> None:
        self.token = token
        self.schemas = schemas or schema_file("schemas.json")
        self.resource_types = resource_types or schema_file("resource-types.json")
        self.service_provider_config = service_provider_config
        self.dynamic_tenants = dynamic_tenants
        self.port = 0
        self.log: list[PbxRequest] = []
        self._process: subprocess.Popen[str] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._logged = threading.Condition()

    def url(self, tenant: str | None = None) -> str:
        prefix = f"/{tenant}" if tenant else ""
        return f"http://127.0.0.1:{self.port}{prefix}/v2"

    def requests(self, tenant: str | None = None) -> list[PbxRequest]:
        """Logged requests, of one tenant when given."""
        with self._logged:
            return list(self.log) if tenant is None else self._entries_of(tenant)

    def start(self) -> Self:
        executable = shutil.which("scim2-server", path=str(Path(sys.executable).parent)) or shutil.which("scim2-server")
        if executable is None:
            raise ScimServerError("scim2-server is not installed (pip install scim2-server)")
        command = [executable, "--schema", str(self.schemas), "--resource-type", str(self.resource_types),
                   "--bearer-token", self.token, "--hostname", "127.0.0.1"]
        if self.dynamic_tenants:
            command.append("--dynamic-tenants")
        if self.service_provider_config is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="m365sync-scim-")
            config_path = Path(self._tmp.name) / "service-provider-config.json"
            config_path.write_text(json.dumps(self.service_provider_config))
            command += ["--service-provider-config", str(config_path)]
        return self._serve(lambda port: [*command, "--port", str(port)], "scim2-server")

    def _serve(self, command: Callable[[int], list[str]], name: str, cwd: Path | None = None) -> Self:
        """Start ``command(port)`` on a free port; it prints "Serving SCIM" once it listens."""
        for _ in range(5):  # a free port can be taken between probing and binding
            self.port = _free_port()
            process = subprocess.Popen(
                command(self.port),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=cwd,
            )
            if self._wait_until_serving(process):
                self._process = process
                threading.Thread(target=self._read_log, args=(process,), daemon=True).start()
                return self
            process.kill()
            process.wait()
        raise ScimServerError(f"{name} did not start; see its output above")

    @property
    def pid(self) -> int | None:
        """The server process's id (benchmarks read its CPU time), while it runs."""
        return self._process.pid if self._process is not None else None

    def _wait_until_serving(self, process: subprocess.Popen[str]) -> bool:
        """scim2-server prints "Serving SCIM on ..." once its socket listens (and
        exits at once when the port is taken, which ends the read with "")."""
        assert process.stdout is not None
        line = process.stdout.readline()
        if "Serving SCIM" not in line or process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=START_TIMEOUT_SECONDS):
                return True
        except OSError:
            return False

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            match = _ACCESS_LINE.search(line)
            if match:
                with self._logged:
                    self.log.append(PbxRequest(match["method"], match["path"], int(match["status"])))
                    self._logged.notify_all()

    def wait_for_requests(self, tenant: str, count: int, timeout: float = 10.0) -> list[PbxRequest]:
        """The tenant's log once it holds ``count`` entries (the server logs just
        after answering), or whatever it holds when ``timeout`` runs out."""
        with self._logged:
            self._logged.wait_for(lambda: len(self._entries_of(tenant)) >= count, timeout)
            return self._entries_of(tenant)

    def settled_requests(self, tenant: str, timeout: float = 10.0) -> list[PbxRequest]:
        """The tenant's log once every request answered so far is in it: a marker
        request is sent and waited for (the server logs just after answering), then dropped."""
        marker = f"/{tenant}/v2/ServiceProviderConfig?settle={uuid.uuid4().hex}"
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{marker}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        with self._logged:
            self._logged.wait_for(lambda: any(e.path == marker for e in self.log), timeout)
            return [e for e in self._entries_of(tenant) if e.path != marker]

    def _entries_of(self, tenant: str) -> list[PbxRequest]:
        """A tenant's entries; the caller holds the log's lock."""
        return [e for e in self.log if e.path.startswith(f"/{tenant}/")]

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
