"""Secret files: ``admin_token_file``, ``pbx.token_file``, ``client_secret_file``,
``client_private_key_file``, ``[state] password_file`` and ``[state]
encryption_key_file`` (or systemd credentials, files in ``$CREDENTIALS_DIRECTORY``).

One rule for every one of them, checked when the configuration is loaded and
again whenever the file is read:

    a regular file that "others" may neither read nor write and its group may
    not write: mode 0640 or stricter. The usual layout is root:m365sync 0640
    (root writes it, the daemon's group reads it, what ``m365sync init`` and
    ``install -m 0640 -g m365sync`` make); 0600 owned by the daemon's user
    works as well.

A secret file that does not exist yet is only a warning, because the daemon can
still serve its other tenants and its OAuth pages; that tenant is reported not
ready. An empty one (only whitespace) is refused when read, and reported by
``m365sync check-config`` with the field that names it.
"""

from __future__ import annotations

import stat
from pathlib import Path

from daemon.errors import ConfigError, ConfigProblem
from daemon.redact import remember_secret


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
            f"{path} has mode {mode:04o}; a secret file must be 0640 or stricter (nothing for others, no writing "
            f"for its group); run: chmod 640 {path} (owner root, group m365sync), "
            f"or chmod 600 {path} if the daemon's user owns it",
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
    """The stripped contents of a secret file, checked like at load time, and
    from now on redacted from everything the process emits."""
    problem = secret_file_problem(path)
    if problem is not None:
        raise ConfigError([ConfigProblem("", problem[0])])
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([ConfigProblem("", f"{path}: cannot read secret ({err})")]) from None
    if not value:
        raise ConfigError([ConfigProblem("", f"{path} is empty")])
    remember_secret(value)
    return value


def is_empty_secret(path: Path) -> bool:
    """Whether the file exists and holds nothing but whitespace (``install -m 0640 /dev/null FILE`` makes one)."""
    try:
        return not path.read_bytes().strip()
    except OSError:
        return False  # missing or unreadable: secret_file_problem says so
