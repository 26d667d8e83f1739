"""Who the daemon runs as, and what that user may do with a file: so that
``check-config``, run by root, can tell whether the daemon's user (the unit's
``User=m365sync``) will be able to write its state."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

DAEMON_USER = "m365sync"  # contrib/systemd/m365sync.service: User=
# Who the daemon runs as when the unit's User= was changed (or in tests, where the
# machine's accounts must not change the answer): check-config checks as this user.
USER_VARIABLE = "M365SYNC_USER"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gids: frozenset[int]
    is_this_process: bool = False

    def may(self, info: os.stat_result, *, read: bool = False, write: bool = False, search: bool = False) -> bool:
        """Whether the file's mode lets this user read/write/search it (root may do anything; ACLs not counted)."""
        if self.uid == 0:
            return True
        wanted = (4 if read else 0) | (2 if write else 0) | (1 if search else 0)
        if info.st_uid == self.uid:
            granted = info.st_mode >> 6
        elif info.st_gid in self.gids:
            granted = info.st_mode >> 3
        else:
            granted = info.st_mode
        return granted & wanted == wanted


def daemon_account(user: str | None = None) -> Account:
    """The daemon's user when it exists and this process is someone else (root checking); else this process."""
    user = user or os.environ.get(USER_VARIABLE) or DAEMON_USER
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (a container's)
        name = str(uid)
    if name != user:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            pass
        else:
            members = {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}
            return Account(entry.pw_name, entry.pw_uid, frozenset(members | {entry.pw_gid}))
    return Account(name, uid, frozenset({os.getegid(), *os.getgroups()}), is_this_process=True)
