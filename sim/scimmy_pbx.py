"""A second SCIM 2.0 server as the PBX of the tests: SCIMMY, with its Express
routers (``sim/scimmy/server.js``, installed by ``npm ci`` in ``sim/scimmy``).

Where scim2-server (``sim/pbx.py``) is one implementation, SCIMMY is another
that we did not write either: it answers /Bulk PATCH and DELETE results
without ``bulkId`` (RFC 7644 3.7 asks it only for POST), refuses a ``data:``
URI as ``photos.value`` (a URL reference in RFC 7643 4.1.2), and announces no
ETags. One process serves one empty PBX (no tenants).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

from daemon.pbx.schema import schema_file
from sim.pbx import PbxRequest, ScimServer, ScimServerError, _free_port

SCIMMY_DIR = Path(__file__).resolve().parent / "scimmy"


class ScimmyServer(ScimServer):
    """``node sim/scimmy/server.js`` on a free loopback port; its access log parsed as scim2-server's."""

    def __init__(self, token: str = "pbx-test-token") -> None:
        super().__init__(token=token, dynamic_tenants=False)

    def url(self, tenant: str | None = None) -> str:
        return f"http://127.0.0.1:{self.port}/v2"  # one PBX per process: the tenant is ignored

    def start(self) -> ScimmyServer:
        node = shutil.which("node")
        if node is None or not (SCIMMY_DIR / "node_modules" / "scimmy").is_dir():
            raise ScimServerError("SCIMMY is not installed: run `npm ci` in sim/scimmy (Node 20)")
        schemas = schema_file("schemas.json").parent
        for _ in range(5):  # a free port can be taken between probing and binding
            self.port = _free_port()
            process = subprocess.Popen(
                [node, str(SCIMMY_DIR / "server.js"), "--port", str(self.port), "--token", self.token,
                 "--schemas", str(schemas)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SCIMMY_DIR,
            )
            if self._wait_until_serving(process):
                self._process = process
                threading.Thread(target=self._read_log, args=(process,), daemon=True).start()
                return self
            process.kill()
            process.wait()
        raise ScimServerError("SCIMMY did not start; see its output above")

    def _entries_of(self, tenant: str) -> list[PbxRequest]:
        return list(self.log)

    def __enter__(self) -> ScimmyServer:
        return self.start()

