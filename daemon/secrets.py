"""Secret files: tokens, client secrets, private keys, the state's encryption key.

Every secret comes from a file (or a systemd credential, a file in
``$CREDENTIALS_DIRECTORY``), checked for permissions when the configuration is
loaded and again when it is read: a file readable by "others" or writable by
its group is refused. A secret file that does not exist yet is only a warning,
because the daemon can still serve its other tenants and its OAuth pages; that
tenant is reported not ready.
"""

from __future__ import annotations

import stat
from pathlib import Path

from daemon.errors import ConfigError, ConfigProblem


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


def secret_file_problems(files: list[tuple[str, Path]]) -> list[ConfigProblem]:
    """The problems of these secret files, each located by its field path."""
    problems = []
    for field_path, path in files:
        problem = secret_file_problem(path)
        if problem is not None:
            message, is_warning = problem
            problems.append(ConfigProblem(field_path, message, is_warning=is_warning))
    return problems


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
