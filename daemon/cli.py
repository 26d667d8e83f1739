"""The ``m365sync`` command line.

Every error the operator can cause ends as a message on stderr and an exit
code (2 for a bad configuration or usage, 1 for anything else), never as a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from daemon.errors import ConfigError, M365SyncError

if TYPE_CHECKING:
    from daemon.config import Config, TenantConfig

DEFAULT_CONFIG = Path(os.environ.get("M365SYNC_CONFIG", "/etc/m365sync/config.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # here, where a reader gone away (| head) is caught, not at exit
        return code
    except ConfigError as err:
        for problem in err.problems:
            print(str(problem), file=sys.stderr)
        return err.exit_code
    except M365SyncError as err:
        print(f"m365sync: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as err:
        # Never a traceback for the operator; M365SYNC_DEBUG=1 shows it.
        if os.environ.get("M365SYNC_DEBUG"):
            traceback.print_exc()
        reason = str(err).splitlines()[0][:200] if str(err) else ""
        print(f"m365sync: internal error: {type(err).__name__}{': ' + reason if reason else ''} "
              "(set M365SYNC_DEBUG=1 for details, and please report it)", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m365sync",
        description="Keeps a VeloPBX phone system in sync with Microsoft 365 / Entra ID.",
    )
    parser.add_argument("--version", action=PrintVersion)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text)

    run = add("run", "run the daemon (what the systemd unit starts)")
    _config_argument(run)
    run.add_argument("--state", type=Path, help="state database path, overriding [state] path")
    run.set_defaults(handler=_run)

    check = add("check-config", "validate the configuration and print a summary per tenant")
    _config_argument(check)
    check.add_argument(
        "--strict", action="store_true", help="treat warnings (e.g. missing secret files) as errors"
    )
    check.set_defaults(handler=_check_config)

    authorize = add("authorize", "print a one-time link that starts the Microsoft 365 authorization of a tenant")
    _config_argument(authorize)
    authorize.add_argument("--tenant", required=True, help="the tenant's name in the config")
    authorize.add_argument("--via", choices=["pbx", "sbc"], default="pbx", help="use the PBX or the SBC redirect URI")
    authorize.set_defaults(handler=_authorize)

    uris = add("redirect-uris", "print the exact redirect URIs to register in Entra ID")
    _config_argument(uris)
    uris.set_defaults(handler=_redirect_uris)

    sync = add("sync", "run one sync in the foreground (--once), or only print its plan (--once --dry-run)")
    _config_argument(sync)
    sync.add_argument("--tenant", help="only this tenant (default: every enabled tenant)")
    sync.add_argument("--once", action="store_true", required=True, help="one run, then exit")
    sync.add_argument("--photos", action="store_true",
                      help="check every user's photo this run (otherwise each about once per photo_check_hours)")
    sync.add_argument("--dry-run", action="store_true",
                      help="with --once: print the plan; change nothing on the PBX or in the state")
    sync.set_defaults(handler=_sync)

    explain = add("explain", "say why a user is or is not synced, their extension, last push and last error")
    _config_argument(explain)
    explain.add_argument("--tenant", required=True)
    explain.add_argument("user", help="userPrincipalName or object ID")
    explain.set_defaults(handler=_explain)

    history = add("history", "what happened to a user or group, when and why: every write, oldest first")
    _config_argument(history)
    history.add_argument("--tenant", required=True)
    history.add_argument("object", help="userPrincipalName, group name or object ID (also of a deleted one)")
    history.set_defaults(handler=_history)

    approve = add("approve", "release the deprovisions held by the mass-deletion guard, on the next run")
    _config_argument(approve)
    approve.add_argument("--tenant", required=True)
    approve.set_defaults(handler=_approve)

    sync_now = add("sync-now", "ask the running daemon to sync a tenant now (POST /api/tenants/T/sync)")
    _config_argument(sync_now)
    sync_now.add_argument("--tenant", required=True)
    sync_now.add_argument("--wait", action="store_true", help="wait for the run and print its result")
    sync_now.add_argument("--photos", action="store_true", help="check every user's photo in that run")
    sync_now.set_defaults(handler=_sync_now)

    status_cmd = add("status", "show each tenant's authorization, last and next run, held and quarantined objects")
    _config_argument(status_cmd)
    status_cmd.add_argument("--json", action="store_true", help="print JSON (as GET /api/status)")
    status_cmd.set_defaults(handler=_status)

    disconnect = add("disconnect", "stop syncing a tenant and forget its authorization (and, with --deprovision, "
                                   "undo what it made on the PBX)")
    _config_argument(disconnect)
    disconnect.add_argument("--tenant", required=True)
    disconnect.add_argument("--deprovision", action="store_true",
                            help="first disable its users and delete its groups and contacts on the PBX (through the "
                                 "mass-deletion guard)")
    disconnect.add_argument("--delete", action="store_true", help="with --deprovision: delete its users instead")
    disconnect.set_defaults(handler=_disconnect)

    state = add("state", "manage the state database")
    state_commands = state.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    copy = state_commands.add_parser(
        "copy", help="copy an installation's whole state into a new, empty database (e.g. SQLite to PostgreSQL)",
        description="Copy every tenant's state (mappings, numbers, deltaLinks, tokens, runs) row for row into a new, "
                    "empty database, so nobody is renumbered and nothing syncs again. Stop the daemon first.")
    copy.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                      help="sqlite:PATH (or a path), or postgresql://USER@HOST/DB")
    copy.add_argument("--to", dest="target", required=True, metavar="TARGET",
                      help="postgresql://USER@HOST/DB, or sqlite:PATH")
    copy.add_argument("--password-file", type=Path,
                      help="the PostgreSQL side's password (otherwise PGPASSFILE or ~/.pgpass)")
    copy.set_defaults(handler=_state_copy)

    init = add("init", "create the configuration folder: a config from the example and a random admin token")
    init.add_argument("--dir", type=Path, default=Path("/etc/m365sync"), help="the folder (default /etc/m365sync)")
    init.add_argument("--group", default="m365sync", help="the daemon's group, which may read the files (default m365sync)")
    init.set_defaults(handler=_init)

    schemas = add("pbx-schemas", "write VeloPBX's SCIM schemas and resource types (for the PBX's admin) to a folder")
    schemas.add_argument("--out", type=Path, default=Path("."), help="the folder (default: the current one)")
    schemas.set_defaults(handler=_pbx_schemas)

    demo = add("demo", "sync a fake 200-user tenant into a real SCIM server on this machine, then keep serving")
    demo.add_argument("--dir", type=Path, help="where the demo keeps its files (default $XDG_DATA_HOME/m365sync/demo,"
                      " else ~/.local/share/m365sync/demo)")
    demo.add_argument("--users", type=int, default=200, help="size of the fake tenant")
    demo.add_argument("--exit", action="store_true", help="stop after the scripted part instead of serving")
    demo.set_defaults(handler=_demo)
    return parser


class PrintVersion(argparse.Action):
    """``--version``; the version is read only when asked (see ``daemon.__getattr__``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from daemon import __version__

        print(f"m365sync {__version__}")
        parser.exit()


def load_config(path: Path) -> Config:
    """The configuration; imported here, not at start-up, so ``--help`` stays fast."""
    from daemon.config import load_config as load

    return load(path)


def _commands() -> ModuleType:
    """The command implementations (aiohttp, msal, the state database): imported only when a command runs."""
    from daemon import commands

    return commands


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"configuration file (default {DEFAULT_CONFIG}, or $M365SYNC_CONFIG)",
    )


def _run(args: argparse.Namespace) -> int:
    from daemon.logging import configure_logging
    from daemon.service import Service

    config = load_config(args.config)
    if args.state is not None:
        config = config.with_state_path(args.state.absolute())
    configure_logging(config.log.level, config.log.format)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    asyncio.run(Service(config).serve_until_stopped())
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from daemon.config_checks import findings

    config = load_config(args.config)
    found = findings(config)
    warnings = [*config.warnings, *(p for p in found if p.is_warning)]
    errors = [p for p in found if not p.is_warning]
    label = "error" if args.strict else "warning"  # --strict makes warnings errors, and says so
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    for warning in warnings:
        print(f"{label}: {warning}", file=sys.stderr)
    if errors or (args.strict and warnings):
        count = len(errors) + (len(warnings) if args.strict else 0)
        under = " under --strict" if args.strict else ""
        print(f"{config.source}: invalid{under}, {count} problem(s)", file=sys.stderr)
        return 2
    print(f"{config.source}: valid, {len(config.tenants)} tenant(s)")
    for tenant in config.tenants:
        print(tenant_summary(tenant))
    return 0


def tenant_summary(tenant: TenantConfig) -> str:
    """One line saying what a tenant will do."""

    def on(flag: bool) -> str:
        return "on" if flag else "off"

    users = tenant.users
    if users.enabled:
        end = f"-{users.last_extension_number}" if users.last_extension_number else "+"
        user_part = f"users {users.sync_type} from {users.starting_extension_number}{end}"
        if users.sync_type != "ALL":
            user_part += f" ({len(users.selected_users)} selected)"
    else:
        user_part = "users off"
    parts = [
        f"{tenant.national_cloud}",
        f"{tenant.auth_mode}",
        f'sync "{tenant.sync_time}" {tenant.timezone}',
        user_part,
        f"contacts {on(tenant.personal_contacts.enabled)}",
        f"events {on(tenant.events.enabled)}",
        f"shared mailboxes {on(tenant.shared_mailbox.enabled)}",
        f"{len(tenant.groups)} group(s)",
        f"SSO admin {on(tenant.sign_in_as_administrator.enabled)}",
        f"SSO users {on(tenant.sign_in_as_standard_user.enabled)}",
    ]
    disabled = "" if tenant.enabled else " (disabled)"
    return f"  {tenant.name}{disabled}: " + ", ".join(parts)


def _authorize(args: argparse.Namespace) -> int:
    from daemon.auth.manager import AuthManager
    from daemon.metrics import Metrics
    from state.open import open_database
    from state.store import Store

    config = load_config(args.config)
    tenant = config.tenant(args.tenant)

    async def issue() -> str:
        db = await open_database(config.state.target, password_file=config.state.password_file)
        try:
            store = Store(db)
            await store.register_tenant(tenant.name, tenant.directory_id, tenant.application_id)
            return await AuthManager(config, store, Metrics(served=False)).issue_start_link(tenant.name, args.via)
        finally:
            await db.close()

    link = asyncio.run(issue())
    print(f"Open this link in a browser within 15 minutes (it works once) to connect {tenant.name}:")
    print(link)
    print("The m365sync daemon must be running and reachable at that address.")
    return 0


def _state_copy(args: argparse.Namespace) -> int:
    from state.copy import copy_database

    counts = asyncio.run(copy_database(_state_target(args.source), _state_target(args.target),
                                       password_file=args.password_file))
    print(f"copied {counts['tenants']} tenant(s): " + ", ".join(f"{n} {t}" for t, n in counts.items() if n))
    return 0


def _state_target(text: str) -> Path | str:
    if text.startswith(("postgresql://", "postgres://")):
        return text
    return Path(text.removeprefix("sqlite:")).absolute()


def _redirect_uris(args: argparse.Namespace) -> int:
    from daemon.auth.explain import redirect_uris

    config = load_config(args.config)
    for label, uri in redirect_uris(config.server):
        print(f"{label}: {uri}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from daemon.logging import configure_logging

    config = load_config(args.config)
    configure_logging(config.log.level, "console" if sys.stderr.isatty() else config.log.format)
    return int(asyncio.run(_commands().sync_once(config, args.tenant, args.dry_run, photos=args.photos)))


def _explain(args: argparse.Namespace) -> int:
    return int(asyncio.run(_commands().explain_user(load_config(args.config), args.tenant, args.user)))


def _history(args: argparse.Namespace) -> int:
    return int(asyncio.run(_commands().history(load_config(args.config), args.tenant, args.object)))


def _approve(args: argparse.Namespace) -> int:
    return int(asyncio.run(_commands().approve(load_config(args.config), args.tenant)))


def _sync_now(args: argparse.Namespace) -> int:
    return int(asyncio.run(_commands().sync_now(load_config(args.config), args.tenant, args.wait,
                                                        photos=args.photos)))


def _status(args: argparse.Namespace) -> int:
    return int(asyncio.run(_commands().status(load_config(args.config), args.json)))


def _disconnect(args: argparse.Namespace) -> int:
    from daemon.disconnect import disconnect

    if args.delete and not args.deprovision:
        print("m365sync: error: --delete goes with --deprovision", file=sys.stderr)
        return 2
    return asyncio.run(disconnect(load_config(args.config), args.tenant, args.deprovision, args.delete))


def _init(args: argparse.Namespace) -> int:
    from daemon.setup import init_config_dir

    return init_config_dir(args.dir, args.group, sys.stdout)


def _pbx_schemas(args: argparse.Namespace) -> int:
    from daemon.pbx.schema import SCHEMA_FILES, schema_file

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name in SCHEMA_FILES:
            target = args.out / name
            shutil.copyfile(schema_file(name), target)
            print(target)
    except OSError as err:
        print(f"m365sync: error: cannot write to {args.out}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from daemon.demo import default_demo_dir, fresh_demo_dir, run_demo

    workdir = (args.dir or default_demo_dir()).absolute()
    try:
        fresh_demo_dir(workdir)  # a fresh world each time
        return asyncio.run(run_demo(workdir, args.exit, args.users, sys.stdout))
    except RuntimeError as err:
        print(f"m365sync: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
