"""m365sync: keeps a VeloPBX phone system in sync with Microsoft 365 / Entra ID."""


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed package on first use: importlib.metadata
    costs every process 30 ms of start-up, and only ``--version``, the metrics and the
    status API show it."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("m365sync")
    except PackageNotFoundError:  # running from a source tree that is not installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
