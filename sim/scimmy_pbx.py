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
from pathlib import Path

from daemon.pbx.schema import schema_file
from sim.pbx import PbxRequest, ScimServer, ScimServerError

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
        schemas = str(schema_file("schemas.json").parent)
        return self._serve(lambda port: [node, str(SCIMMY_DIR / "server.js"), "--port", str(port),
                                         "--token", self.token, "--schemas", schemas], "SCIMMY", cwd=SCIMMY_DIR)

    def _entries_of(self, tenant: str) -> list[PbxRequest]:
        return list(self.log)


