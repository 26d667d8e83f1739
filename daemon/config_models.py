"""The configuration's sections, as pydantic models: one class per TOML table,
each key with the PBX's "Microsoft 365 Integration" page default, and
:class:`Config`, the validated whole. Loading them is ``daemon.config``'s job,
the rules joining several keys ``daemon.config_rules``'s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.config_values import (
    DEFAULT_LISTEN,
    DEFAULT_SYNC_TIME,
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
    history_days: int = Field(default=30, ge=1, le=3650)  # how long each object's history of writes is kept

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
    # The fast poll of the users and groups deltas (one request each when nothing changed),
    # between the full runs of sync_time; a new hire or a leaver reaches the PBX within it.
    poll_seconds: int = Field(default=60, ge=10)


class PersonalContactsConfig(_Section):
    enabled: bool = False
    require_phone: bool = True
    # Each mailbox's contact folders (shared mailboxes' too) are listed again about this often, spread over
    # the runs; their contacts come every run (daemon/sync/folder_schedule.py). 0: every run.
    folder_refresh_hours: int = Field(default=24, ge=0, le=24 * 30)
    # The mailbox backstop: every mailbox's contacts delta this often (besides every full run), a slice of
    # the mailboxes each minute (daemon/backstop.py).
    poll_seconds: int = Field(default=1800, ge=60)


ShowAs = Literal["busy", "oof", "tentative", "workingElsewhere", "free", "unknown"]


def _default_show_as() -> list[ShowAs]:
    return ["busy", "oof", "tentative"]


class EventsConfig(_Section):
    enabled: bool = False
    window_days: int = Field(default=14, ge=1, le=60)
    poll_seconds: int = Field(default=60, ge=10)
    show_as: list[ShowAs] = Field(default_factory=_default_show_as)


class NotificationsConfig(_Section):
    # Graph change notifications trigger the reads (issue 25): on whenever [server] public_url is set.
    enabled: bool = True


class PresenceConfig(_Section):
    """Teams presence to the PBX's ``pbx:presence``, polled with getPresencesByUserId
    (650 users a request); the PBX routes calls by it like a busy window."""

    enabled: bool = False
    poll_seconds: int = Field(default=30, ge=5)


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
    notifications: NotificationsConfig = NotificationsConfig()
    presence: PresenceConfig = PresenceConfig()
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


class TopLevel(_Section):
    """The file's top-level tables; each [[tenants]] table is validated on its own, so one
    tenant's mistakes are located by its index."""

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

    def find_tenant(self, name: str) -> TenantConfig | None:
        """The tenant called ``name``, or None (a name from a URL, a message or the state)."""
        return next((t for t in self.tenants if t.name == name), None)

    def tenant(self, name: str) -> TenantConfig:
        """The tenant called ``name``; a ConfigError naming the known ones if absent."""
        if (tenant := self.find_tenant(name)) is not None:
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
