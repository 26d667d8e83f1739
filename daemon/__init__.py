"""m365sync: keeps a VeloPBX phone system in sync with Microsoft 365 / Entra ID."""


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed package's metadata on first use: only
    ``--version``, a metrics scrape and the status API show it, so a ``sync --once``
    process does not pay for importlib.metadata's search of the installed packages."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("m365sync")
    except PackageNotFoundError:  # running from a source tree that is not installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
