"""The TOML configuration: one file, several VeloPBX tenants.

Every setting of the PBX's "Microsoft 365 Integration" page has its own key
with the page's default. Loading reports *every* problem at once, each located
by a field path such as ``tenants[0].users.starting_extension_number``, and
never raises anything but :class:`~daemon.errors.ConfigError`.

Paths are resolved against the directory of the configuration file. Secret
files (tokens, client secrets, private keys) are checked for permissions: a
file readable by "others" or writable by its group is refused. A secret file
that does not exist yet is only a warning, because the daemon can still serve
its other tenants and its OAuth pages; that tenant is reported not ready.
"""

from __future__ import annotations

import difflib
import json
import stat
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from daemon.config_values import (
    DEFAULT_LISTEN,
    DEFAULT_SYNC_TIME,
    TENANT_NAME_PATTERN,
    AuthMode,
    BaseUrl,
    ConfigPath,
    Crontab,
    ExtensionNumber,
    HttpUrl,
    ListenAddress,
    LogFormat,
    LogLevel,
    NationalCloud,
    PostgresUrl,
    PublicUrl,
    SyncType,
    TimeZoneName,
    UserReference,
    Uuid,
    split_host_port,
)
from daemon.errors import ConfigError, ConfigProblem
from state.db import redacted_url

_M = typing.TypeVar("_M", bound=BaseModel)


class _Section(BaseModel):
    """A TOML table: strict types, unknown keys refused, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ServerConfig(_Section):
    listen: ListenAddress = DEFAULT_LISTEN
    public_url: PublicUrl | None = None
    sbc_public_url: PublicUrl | None = None
    admin_token_file: ConfigPath | None = None

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        port = split_host_port(self.listen)[1]
        return 8790 if port is None else port


class StateConfig(_Section):
    """Where the state lives: a SQLite file (``path``, the default), or a
    PostgreSQL database shared by several daemons (``url``, see the README's
    high-availability section)."""

    path: ConfigPath = Path("/var/lib/m365sync/state.db")
    url: PostgresUrl | None = None
    password_file: ConfigPath | None = None
    encryption_key_file: ConfigPath | None = None
    lease_seconds: int = Field(default=30, ge=5, le=3600)  # PostgreSQL: a dead daemon's tenants move within this
    instance_name: str | None = Field(default=None, min_length=1, max_length=100)  # PostgreSQL: default the host name

    @property
    def shared(self) -> bool:
        return self.url is not None

    @property
    def target(self) -> Path | str:
        """What :func:`state.open.open_database` opens."""
        return self.url if self.url is not None else self.path


class RunsConfig(_Section):
    """How many tenants sync at once, and how long one run may take. Runs beyond
    ``max_concurrent`` wait their turn in the order they became due (so a
    daemon of 500 tenants never starts 500 runs at once), and a run over
    ``timeout_minutes`` is stopped and recorded as ``timeout`` (so one hung
    tenant holds one place only so long). Calendar polls are not counted.
    ``identity_timeout_seconds`` bounds each call to the identity platform, so
    a hung token endpoint ends a run in seconds rather than at its time limit."""

    max_concurrent: int = Field(default=8, ge=1, le=256)
    timeout_minutes: int = Field(default=180, ge=1, le=24 * 60)
    identity_timeout_seconds: float = Field(default=30, gt=0, le=600)


class LogConfig(_Section):
    level: LogLevel = "info"
    format: LogFormat = "json"


class PbxConfig(_Section):
    scim_url: HttpUrl
    token_file: ConfigPath


PhotoSize = Literal["48x48", "64x64", "96x96", "120x120", "240x240"]


class UsersConfig(_Section):
    enabled: bool = False
    sync_guest_users: bool = False
    sync_photo: bool = False
    photo_size: PhotoSize = "96x96"
    # Photo changes are not in the users delta: each user's photo is checked
    # about once per this many hours, spread over the runs (0: every run).
    photo_check_hours: int = Field(default=24, ge=0)
    starting_extension_number: ExtensionNumber | None = None
    last_extension_number: ExtensionNumber | None = None
    sync_type: SyncType = "ALL"
    selected_users: list[UserReference] = Field(default_factory=list)
    extension_reuse_days: int = Field(default=90, ge=0)
    delete_after_days: int = Field(default=30, ge=0)
    max_deprovisions_per_run: int | None = Field(default=None, ge=0)


class PersonalContactsConfig(_Section):
    enabled: bool = False
    require_phone: bool = True


ShowAs = Literal["busy", "oof", "tentative", "workingElsewhere", "free", "unknown"]


def _default_show_as() -> list[ShowAs]:
    return ["busy", "oof", "tentative"]


class EventsConfig(_Section):
    enabled: bool = False
    window_days: int = Field(default=14, ge=1, le=60)
    poll_seconds: int = Field(default=60, ge=10)
    show_as: list[ShowAs] = Field(default_factory=_default_show_as)


class SharedMailboxConfig(_Section):
    enabled: bool = False
    mailboxes: list[UserReference] = Field(default_factory=list)


class SignInAsAdministratorConfig(_Section):
    enabled: bool = False
    selected_users: list[UserReference] = Field(default_factory=list)


class SignInAsStandardUserConfig(_Section):
    enabled: bool = False
    sync_type: SyncType = "ALL"
    selected_users: list[UserReference] = Field(default_factory=list)


class TenantConfig(_Section):
    name: str
    enabled: bool = True
    national_cloud: NationalCloud = "GLOBAL"
    directory_id: Uuid
    application_id: Uuid
    auth_mode: AuthMode = "delegated"
    client_certificate_file: ConfigPath | None = None
    client_private_key_file: ConfigPath | None = None
    client_secret_file: ConfigPath | None = None
    sync_time: Crontab = DEFAULT_SYNC_TIME
    timezone: TimeZoneName = "UTC"
    authority_url: BaseUrl | None = None
    graph_url: BaseUrl | None = None
    ca_file: ConfigPath | None = None
    groups: list[Uuid] = Field(default_factory=list)
    groups_starting_extension_number: ExtensionNumber | None = None
    groups_transitive: bool = False
    pbx: PbxConfig
    users: UsersConfig = UsersConfig()
    personal_contacts: PersonalContactsConfig = PersonalContactsConfig()
    shared_mailbox: SharedMailboxConfig = SharedMailboxConfig()
    events: EventsConfig = EventsConfig()
    sign_in_as_administrator: SignInAsAdministratorConfig = SignInAsAdministratorConfig()
    sign_in_as_standard_user: SignInAsStandardUserConfig = SignInAsStandardUserConfig()

    def secret_files(self) -> dict[str, Path]:
        """The secret files this tenant reads, by field path below the tenant."""
        files = {"pbx.token_file": self.pbx.token_file}
        for key in ("client_private_key_file", "client_secret_file"):
            path = getattr(self, key)
            if path is not None:
                files[key] = path
        return files


class _TopLevel(_Section):
    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    log: LogConfig = LogConfig()
    runs: RunsConfig = RunsConfig()
    tenants: list[dict[str, Any]] = Field(default_factory=list)


CALLBACK_PATH = "/api/auth/callback/ms365"  # where the browser flow ends (the PBX's documented path)


@dataclass(frozen=True)
class Config:
    """The validated configuration, plus the warnings found while loading it."""

    source: Path
    server: ServerConfig
    state: StateConfig
    log: LogConfig
    tenants: tuple[TenantConfig, ...]
    warnings: tuple[ConfigProblem, ...] = ()
    runs: RunsConfig = RunsConfig()

    def tenant(self, name: str) -> TenantConfig:
        """The tenant called ``name``; a ConfigError naming the known ones if absent."""
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        known = ", ".join(t.name for t in self.tenants) or "none"
        raise ConfigError([ConfigProblem("", f'no tenant named "{name}" (known: {known})')])

    def with_state_path(self, path: Path) -> Config:
        """A copy whose state database lives at ``path`` (demo, tests, CLI override)."""
        return Config(
            source=self.source,
            server=self.server,
            state=self.state.model_copy(update={"path": path}),
            log=self.log,
            tenants=self.tenants,
            warnings=self.warnings,
            runs=self.runs,
        )


# --- loading ---


def load_config(path: Path) -> Config:
    """Read, parse and validate the file at ``path``; ConfigError lists every problem."""
    raw = _read_toml(path)
    base_dir = path.absolute().parent
    problems: list[ConfigProblem] = []
    top = _validate(_TopLevel, raw, (), base_dir, problems)
    raw_tenants = raw.get("tenants", [])
    tenants: list[TenantConfig] = []
    if isinstance(raw_tenants, list):
        for index, raw_tenant in enumerate(raw_tenants):
            if not isinstance(raw_tenant, dict):
                continue  # already reported by the top-level validation
            tenant = _validate(TenantConfig, raw_tenant, ("tenants", index), base_dir, problems)
            if tenant is not None:
                problems.extend(_tenant_rules(tenant, index))
                tenants.append(tenant)
        problems.extend(_unique_names(raw_tenants))
    if not raw_tenants and top is not None:
        problems.append(ConfigProblem("tenants", "at least one [[tenants]] table is required"))
    if top is not None:
        problems.extend(_secret_file_problems(top.server, top.state, tenants))
        if top.server.public_url is None and any(t.enabled and t.auth_mode == "delegated" for t in tenants):
            problems.append(ConfigProblem(
                "server.public_url",
                f"not set, so the redirect URI is http://localhost:{top.server.port}{CALLBACK_PATH}, which only a "
                "browser on this host reaches; set it to the https address admins open (the PBX portal's)",
                is_warning=True))
    errors = [p for p in problems if not p.is_warning]
    if errors or top is None:
        raise ConfigError(errors)
    return Config(
        source=path.absolute(),
        server=top.server,
        state=top.state,
        log=top.log,
        tenants=tuple(tenants),
        warnings=tuple(p for p in problems if p.is_warning),
        runs=top.runs,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", f"{path}: no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem("", f"{path}: is a directory, not a file")]) from None
    except PermissionError:
        raise ConfigError([ConfigProblem("", f"{path}: permission denied")]) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            [ConfigProblem("", f"{path}: not UTF-8 text (byte {err.start})")]
        ) from None
    except OSError as err:
        raise ConfigError([ConfigProblem("", f"{path}: {err.strerror}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([ConfigProblem("", f"{path}: not valid TOML: {err}")]) from None


def _validate(
    model: type[_M],
    raw: object,
    prefix: tuple[str | int, ...],
    base_dir: Path,
    problems: list[ConfigProblem],
) -> _M | None:
    try:
        return model.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        for error in err.errors():
            loc = prefix + tuple(error["loc"])
            problems.append(ConfigProblem(format_path(loc), _message(model, error)))
        return None


def format_path(loc: tuple[str | int, ...]) -> str:
    """``("tenants", 0, "users")`` -> ``tenants[0].users``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _message(model: type[BaseModel], error: Any) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        allowed = _field_names_at(model, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        return "unknown key" + (f'; did you mean "{hint[0]}"?' if hint else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"must be one of {expected}"
    elif kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
    else:
        message = _TYPE_MESSAGES.get(kind, str(error["msg"]))
    value = error.get("input")
    if loc[-1:] == ("url",) and isinstance(value, str):
        value = redacted_url(value)  # a database URL may carry one: it is never echoed
    if isinstance(value, (str, int, float, bool)):
        message += f" (got {json.dumps(value, ensure_ascii=False)})"
    return message


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "list_type": "must be an array",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "path_type": "must be a file path",
    "greater_than_equal": "must be 0 or more",
}


def _field_names_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` inside ``model``, for "did you mean" hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _tenant_rules(tenant: TenantConfig, index: int) -> list[ConfigProblem]:
    """Rules that join several keys of one tenant."""
    at = f"tenants[{index}]"
    problems: list[ConfigProblem] = []
    if not TENANT_NAME_PATTERN.fullmatch(tenant.name):
        problems.append(
            ConfigProblem(
                f"{at}.name",
                "must be 1-63 characters of lower-case letters, digits, '-' or '_', "
                f"starting with a letter or digit (got {json.dumps(tenant.name)})",
            )
        )
    users = tenant.users
    if users.enabled and users.starting_extension_number is None:
        problems.append(
            ConfigProblem(
                f"{at}.users.starting_extension_number",
                'required when users.enabled = true (e.g. "1001")',
            )
        )
    first, last = users.starting_extension_number, users.last_extension_number
    if first is not None and last is not None and int(last) < int(first):
        problems.append(
            ConfigProblem(
                f"{at}.users.last_extension_number",
                f"must not be below starting_extension_number {first} (got {json.dumps(last)})",
            )
        )
    if tenant.auth_mode == "application":
        has_certificate = tenant.client_certificate_file is not None
        has_key = tenant.client_private_key_file is not None
        if has_certificate != has_key:
            missing = "client_private_key_file" if has_certificate else "client_certificate_file"
            problems.append(
                ConfigProblem(f"{at}.{missing}", "required together with its certificate/key pair")
            )
        if not has_certificate and not has_key and tenant.client_secret_file is None:
            problems.append(
                ConfigProblem(
                    f"{at}.auth_mode",
                    'application mode needs client_certificate_file + client_private_key_file '
                    "(preferred) or client_secret_file",
                )
            )
    else:
        for key in ("client_certificate_file", "client_private_key_file", "client_secret_file"):
            if getattr(tenant, key) is not None:
                problems.append(
                    ConfigProblem(
                        f"{at}.{key}",
                        'delegated mode is a public client and sends no credential '
                        '(Entra answers AADSTS700025); remove it or set auth_mode = "application"',
                    )
                )
    return problems


def _unique_names(raw_tenants: list[Any]) -> list[ConfigProblem]:
    seen: dict[str, int] = {}
    problems: list[ConfigProblem] = []
    for index, raw in enumerate(raw_tenants):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(
                ConfigProblem(
                    f"tenants[{index}].name",
                    f"duplicate tenant name {json.dumps(name)} (also tenants[{seen[name]}])",
                )
            )
        else:
            seen[name] = index
    return problems


def _secret_file_problems(
    server: ServerConfig, state: StateConfig, tenants: list[TenantConfig]
) -> list[ConfigProblem]:
    files: list[tuple[str, Path]] = []
    if server.admin_token_file is not None:
        files.append(("server.admin_token_file", server.admin_token_file))
    if state.encryption_key_file is not None:
        files.append(("state.encryption_key_file", state.encryption_key_file))
    if state.password_file is not None:
        files.append(("state.password_file", state.password_file))
    for index, tenant in enumerate(tenants):
        for key, path in tenant.secret_files().items():
            files.append((f"tenants[{index}].{key}", path))
    problems = []
    for field_path, path in files:
        problem = secret_file_problem(path)
        if problem is not None:
            message, is_warning = problem
            problems.append(ConfigProblem(field_path, message, is_warning=is_warning))
    return problems


def secret_file_problem(path: Path) -> tuple[str, bool] | None:
    """What is wrong with a secret file, and whether it is only a warning."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{path} does not exist yet; this is needed before the daemon can use it", True
    except OSError as err:
        return f"{path}: {err.strerror}", False
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file", False
    if info.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        mode = stat.S_IMODE(info.st_mode)
        return (
            f"{path} has mode {mode:04o}, readable or writable by others; "
            f"run: chmod 600 {path}",
            False,
        )
    return None


def read_secret(path: Path) -> str:
    """The stripped contents of a secret file, checked like at load time."""
    problem = secret_file_problem(path)
    if problem is not None:
        raise ConfigError([ConfigProblem("", problem[0])])
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([ConfigProblem("", f"{path}: cannot read secret ({err})")]) from None
    if not value:
        raise ConfigError([ConfigProblem("", f"{path} is empty")])
    return value
