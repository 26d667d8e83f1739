"""The configuration's value types: each key's validator, raising ValueError with
the operator's message, and the Annotated types the sections are declared with
(``daemon.config``). Split out so that the sections read as the PBX page does."""

from __future__ import annotations

import ipaddress
import os
import re
import uuid
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import BeforeValidator, ValidationInfo

NationalCloud = Literal["GLOBAL", "CHINA", "USGOV", "USGOV_DOD"]
SyncType = Literal["ALL", "INCLUDE", "EXCLUDE"]
AuthMode = Literal["delegated", "application"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "console"]

DEFAULT_LISTEN = "127.0.0.1:8790"
DEFAULT_SYNC_TIME = "0 */6 * * *"
EXTENSION_NUMBER_PATTERN = re.compile(r"[1-9][0-9]{2,12}")
TENANT_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


# --- value validators: each raises ValueError with the operator's message ---


CREDENTIAL_PREFIX = "credential:"
# Where systemd puts the unit's credentials (LoadCredential=, LoadCredentialEncrypted=)
# when $CREDENTIALS_DIRECTORY is not set, e.g. for an admin's m365sync status.
SERVICE_CREDENTIALS = Path("/run/credentials/m365sync.service")


def _resolve_path(value: object, info: ValidationInfo) -> object:
    """Turn a string into a path relative to the config file's directory;
    ``credential:NAME`` is the systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME),
    so secrets need not sit in /etc."""
    if not isinstance(value, str):
        return value
    if not value:
        raise ValueError("must not be empty")
    if value.startswith(CREDENTIAL_PREFIX):
        name = value.removeprefix(CREDENTIAL_PREFIX)
        if not name or "/" in name or name in (".", ".."):
            raise ValueError("credential:NAME needs the plain name given to LoadCredential=")
        return Path(os.environ.get("CREDENTIALS_DIRECTORY") or SERVICE_CREDENTIALS) / name
    base = (info.context or {}).get("base_dir", Path.cwd())
    return (Path(base) / Path(value).expanduser()).absolute()


def _uuid(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValueError(
            "must be a UUID like 00000000-0000-0000-0000-000000000000"
        ) from None


def _extension_number(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return value
    if not EXTENSION_NUMBER_PATTERN.fullmatch(value):
        raise ValueError("must be 3-13 digits without a leading zero")
    return value


def _crontab(value: object) -> object:
    if not isinstance(value, str):
        return value
    fields = value.split()
    if len(fields) != 5 or not croniter.is_valid(value):
        raise ValueError(
            "must be a crontab expression of 5 fields "
            '(minute hour day-of-month month day-of-week), e.g. "0 */6 * * *"'
        )
    return " ".join(fields)


def _timezone(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError('must be an IANA time zone such as "Europe/Berlin"') from None
    return value


def _user_reference(value: object) -> object:
    """A selected user is an object ID (UUID) or a userPrincipalName."""
    if not isinstance(value, str):
        return value
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        pass
    local, at, domain = value.strip().partition("@")
    if not at or not local or "." not in domain:
        raise ValueError(
            "must be a userPrincipalName (user@example.com) or an object ID (UUID)"
        )
    return value.strip()


def _listen(value: object) -> object:
    if not isinstance(value, str):
        return value
    host, port = split_host_port(value)
    if host is None or port is None:
        raise ValueError('must be "host:port", e.g. "127.0.0.1:8790" or "[::1]:8790"')
    return value


def split_host_port(value: str) -> tuple[str | None, int | None]:
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value)
    if not match:
        return None, None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        return host, None
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None, port
    return host, port


def _url(value: object, *, https_only: bool) -> object:
    if not isinstance(value, str):
        return value
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL such as https://pbx.example.com:8887")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    if https_only and parts.scheme != "https" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError("must use https (plain http is allowed for localhost only)")
    return value.strip().rstrip("/")


def _base_url(value: object) -> object:
    """Scheme, host and port only: the config's endpoint overrides."""
    checked = _url(value, https_only=False)
    if isinstance(checked, str) and urlsplit(checked).path not in ("", "/"):
        raise ValueError("must be scheme, host and port only, without a path")
    return checked


def _postgres_url(value: object) -> object:
    """A libpq URL, without a password (that comes from password_file or ~/.pgpass)."""
    if not isinstance(value, str):
        return value
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises on a port that is not a number
    except ValueError as err:
        raise ValueError(f"is not a URL: {err}") from err
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ValueError("must be a PostgreSQL URL such as postgresql://m365sync@db.example.com/m365sync")
    if parts.password is not None:
        raise ValueError("must not carry a password: put it in [state] password_file or ~/.pgpass")
    return value.strip()


def _https_url(value: object) -> object:
    return _url(value, https_only=True)


def _http_url(value: object) -> object:
    return _url(value, https_only=False)


ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]
Uuid = Annotated[str, BeforeValidator(_uuid)]
ExtensionNumber = Annotated[str, BeforeValidator(_extension_number)]
Crontab = Annotated[str, BeforeValidator(_crontab)]
TimeZoneName = Annotated[str, BeforeValidator(_timezone)]
UserReference = Annotated[str, BeforeValidator(_user_reference)]
ListenAddress = Annotated[str, BeforeValidator(_listen)]
PublicUrl = Annotated[str, BeforeValidator(_https_url)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]
BaseUrl = Annotated[str, BeforeValidator(_base_url)]
PostgresUrl = Annotated[str, BeforeValidator(_postgres_url)]
