"""The PBX side: VeloPBX's SCIM 2.0 provisioning API."""
