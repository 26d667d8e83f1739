"""The sync engine: read changes, plan (pure), apply to the PBX."""
