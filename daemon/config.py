"""The TOML configuration: one file, several VeloPBX tenants.

Every setting of the PBX's "Microsoft 365 Integration" page has its own key
with the page's default. Loading reports *every* problem at once, each located
by a field path such as ``tenants[0].users.starting_extension_number``, and
never raises anything but :class:`~daemon.errors.ConfigError`.

Paths are resolved against the directory of the configuration file. Secret
files are checked as ``daemon.secrets`` says.

This module is the configuration's public face: the sections
(``daemon.config_models``), the rules joining keys (``daemon.config_rules``)
and the secret files (``daemon.secrets``) are imported from here.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from daemon.config_models import (
    CALLBACK_PATH,
    Config,
    EventsConfig,
    LogConfig,
    PbxConfig,
    PersonalContactsConfig,
    RunsConfig,
    ServerConfig,
    SharedMailboxConfig,
    SignInAsAdministratorConfig,
    SignInAsStandardUserConfig,
    StateConfig,
    TenantConfig,
    TopLevel,
    UsersConfig,
)
from daemon.config_rules import public_url_warning, tenant_rules, unique_names
from daemon.errors import ConfigError, ConfigProblem
from daemon.secrets import read_secret, secret_file_problem, secret_file_problems
from state.db import redacted_url

__all__ = [
    "CALLBACK_PATH",
    "Config",
    "EventsConfig",
    "LogConfig",
    "PbxConfig",
    "PersonalContactsConfig",
    "RunsConfig",
    "ServerConfig",
    "SharedMailboxConfig",
    "SignInAsAdministratorConfig",
    "SignInAsStandardUserConfig",
    "StateConfig",
    "TenantConfig",
    "UsersConfig",
    "format_path",
    "load_config",
    "read_secret",
    "secret_file_problem",
    "secret_files",
]

_M = typing.TypeVar("_M", bound=BaseModel)


def load_config(path: Path) -> Config:
    """Read, parse and validate the file at ``path``; ConfigError lists every problem."""
    raw = _read_toml(path)
    base_dir = path.absolute().parent
    problems: list[ConfigProblem] = []
    top = _validate(TopLevel, raw, (), base_dir, problems)
    raw_tenants = raw.get("tenants", [])
    tenants: list[TenantConfig] = []
    if isinstance(raw_tenants, list):
        for index, raw_tenant in enumerate(raw_tenants):
            if not isinstance(raw_tenant, dict):
                continue  # already reported by the top-level validation
            tenant = _validate(TenantConfig, raw_tenant, ("tenants", index), base_dir, problems)
            if tenant is not None:
                problems.extend(tenant_rules(tenant, index))
                tenants.append(tenant)
        problems.extend(unique_names(raw_tenants))
    if not raw_tenants and top is not None:
        problems.append(ConfigProblem("tenants", "at least one [[tenants]] table is required"))
    if top is not None:
        problems.extend(secret_file_problems(secret_files(top.server, top.state, tenants)))
        warning = public_url_warning(top.server, tenants)
        if warning is not None:
            problems.append(warning)
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
        problems = [ConfigProblem("", f"{path}: not valid TOML: {err}")]
        raise ConfigError(problems + _leading_zero_hint(text, str(err))) from None


def _leading_zero_hint(text: str, error: str) -> list[ConfigProblem]:
    """``starting_extension_number = 0100`` is not TOML (a number cannot start with 0): say so at its key."""
    at = re.search(r"at line (\d+)", error)
    lines = text.splitlines()
    if at is None or not 0 < int(at.group(1)) <= len(lines):
        return []
    line = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\s*=\s*(0\d+)\s*(#.*)?", lines[int(at.group(1)) - 1])
    if line is None:
        return []
    key, number = line.group(1), line.group(2)
    message = f'a TOML number cannot start with 0; quote it: {key} = "{number}"'
    if key.endswith("extension_number"):
        message += " (though an extension number may not start with 0 either: 3-13 digits, the first 1-9)"
    return [ConfigProblem(_table_at(lines[: int(at.group(1)) - 1]) + key, message)]


def _table_at(lines: list[str]) -> str:
    """The field path prefix (``tenants[1].users.``) of the table the last of ``lines`` is in."""
    counts: dict[str, int] = {}
    table = ""
    for line in lines:
        header = re.fullmatch(r"\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?", line)
        if header is None:
            continue
        name = header.group(2)
        parent, _, rest = name.partition(".")
        if header.group(1) == "[[":
            counts[name] = counts.get(name, -1) + 1
            table = f"{name}[{counts[name]}]"
        else:
            table = f"{parent}[{counts[parent]}].{rest}" if parent in counts and rest else name
    return f"{table}." if table else ""


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


def secret_files(server: ServerConfig, state: StateConfig, tenants: list[TenantConfig]) -> list[tuple[str, Path]]:
    """Every secret file the configuration names, by field path."""
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
    return files
