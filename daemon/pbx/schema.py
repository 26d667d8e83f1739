"""Names of VeloPBX's SCIM contract (``pbx-scim-contract.md``), in one place."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PBX_USER = "urn:velopbx:params:scim:schemas:extension:pbx:2.0:User"
PBX_GROUP = "urn:velopbx:params:scim:schemas:extension:pbx:2.0:Group"
PBX_CONTACT = "urn:velopbx:params:scim:schemas:pbx:2.0:Contact"

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SCIM_JSON = "application/scim+json"

Kind = Literal["User", "Group", "Contact"]

ENDPOINTS: dict[str, str] = {"User": "/Users", "Group": "/Groups", "Contact": "/Contacts"}
SCHEMAS: dict[str, list[str]] = {
    "User": [CORE_USER, ENTERPRISE_USER, PBX_USER],
    "Group": [CORE_GROUP, PBX_GROUP],
    "Contact": [PBX_CONTACT],
}
EXTENSION_NUMBER_PATHS: dict[str, str] = {
    "User": f"{PBX_USER}:extensionNumber",
    "Group": f"{PBX_GROUP}:extensionNumber",
}


SCHEMA_FILES = ("schemas.json", "resource-types.json")


def schema_file(name: str) -> Path:
    """VeloPBX's SCIM schemas and resource types, shipped in the package (what a
    PBX serves at /Schemas and /ResourceTypes; ``contrib/scim/`` links to them)."""
    return Path(str(resources.files("daemon.pbx").joinpath("schemas", name)))
