"""m365sync: keeps a VeloPBX phone system in sync with Microsoft 365 / Entra ID."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("m365sync")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
