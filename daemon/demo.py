"""``m365sync demo``: the real daemon syncing a seeded 200-user tenant into a
real SCIM server, on this machine, with no Microsoft tenant.

The Graph simulator, a fake Entra over HTTPS and scim2-server stand in for
Microsoft and the PBX; everything else is the daemon as it runs in
production (application mode, scheduler, HTTP API, metrics). It prints what
the first sync did, plays a scripted day (a new hire, a leaver, a rename, a
guest invited), runs Sync now through the admin API, prints exactly what that
second sync touched, then serves its pages until Ctrl-C (``--exit`` stops).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from daemon.config import load_config
from daemon.logging import configure_logging
from daemon.pbx.schema import PBX_USER
from daemon.service import Service
from daemon.sync.scope import decide

NEW_HIRE = "00000000-0000-4000-8000-00000000d001"
GUEST = "00000000-0000-4000-8000-00000000d002"


def default_demo_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the demo's world (its secrets too) goes without ``--dir``: the XDG data folder, as
    other tools do, never the current directory (which may be ``/``); a fresh temporary folder
    when there is no home to put it in."""
    data_home = environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(data_home):
        return Path(data_home) / "m365sync" / "demo"
    home = environ.get("HOME", "")
    if os.path.isabs(home) and home != "/":
        return Path(home) / ".local" / "share" / "m365sync" / "demo"
    return Path(tempfile.mkdtemp(prefix="m365sync-demo-"))


DEMO_MARK = ".m365sync-demo"  # left in the demo's folder: only a folder holding it is ever removed


def fresh_demo_dir(workdir: Path) -> None:
    """Empty ``workdir`` for a fresh world, but only if an earlier demo made it (or it is
    empty): ``--dir`` pointed at someone's folder must not delete their files."""
    if workdir.exists():
        if any(workdir.iterdir()) and not (workdir / DEMO_MARK).exists():
            raise RuntimeError(f"{workdir} is not empty and was not made by m365sync demo; "
                               "choose an empty or new folder with --dir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, mode=0o700)
    (workdir / DEMO_MARK).touch()


async def run_demo(workdir: Path, exit_after: bool, users: int, out: TextIO) -> int:
    from sim.world import FakeWorld  # the demo extra: trustme, scim2-server

    started = time.monotonic()
    configure_logging("warning", "console")
    print(f"Demo files (secrets included; removed at the next demo): {workdir}", file=out, flush=True)
    world = await FakeWorld(workdir, users=users).start()
    assert world.config_path is not None and world.made is not None and world.sim is not None
    config = load_config(world.config_path)
    service = Service(config, environ={})
    try:
        print(f"Fake Microsoft 365 tenant: {users} users (members, guests, disabled, shared mailboxes, rooms)", file=out)
        print(f"PBX (scim2-server): {world.pbx.url('contoso') if world.pbx else '?'}", file=out)
        await service.start()
        base = f"http://127.0.0.1:{service.bound_port}"
        schedule = service.supervisor.schedules["contoso"]
        first = schedule.current or schedule.queued
        assert first is not None
        progress = await schedule.wait(first.run_id)
        await print_first_sync(service, progress.result or "?", out)

        script = play_scripted_day(world)
        print("\nA day in the tenant:", file=out)
        for line in script:
            print(f"  - {line}", file=out)
        headers = {"Authorization": f"Bearer {world.admin_token}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/api/tenants/contoso/sync", headers=headers) as response:
                run_id = (await response.json())["run_id"]
            print(f"\nSync now: POST /api/tenants/contoso/sync -> {response.status}, run {run_id}", file=out)
            await schedule.wait(run_id)
            async with session.get(f"{base}/api/tenants/contoso/runs/{run_id}", headers=headers) as response:
                run = await response.json()
        await print_second_sync(service, run, out)
        print(f"\nScripted part took {time.monotonic() - started:.1f} s.", file=out)
        if not exit_after:  # with --exit the server stops now: no addresses that are about to go dead
            print(f"\nStatus page: {base}/  (user any, password: the token in {workdir / 'admin-token'})", file=out)
            print(f"Metrics:     {base}/metrics", file=out)
            print(f"Readiness:   {base}/readyz", file=out)
            print("Press Ctrl-C to stop.", file=out, flush=True)
            await _wait_for_interrupt()
        return 0 if run.get("result") == "success" else 1
    finally:
        await service.stop()
        await world.stop()


async def print_first_sync(service: Service, result: str, out: TextIO) -> None:
    tenant = service.config.tenants[0]
    numbers: list[int] = []
    skipped: Counter[str] = Counter()
    members = await service.sync_store.members_of(tenant.name, tenant.groups)
    async for copy, synced in service.sync_store.iter_with_synced(tenant.name, "user"):
        if copy is None:
            continue
        if synced is not None and synced.pbx_id and synced.payload:
            numbers.append(int(synced.payload[PBX_USER]["extensionNumber"]))
        else:
            skipped[decide(copy.data, copy.removed, tenant, members).rule] += 1
    print(f"\nFirst sync ({result}):", file=out)
    print(f"  {'created':<58} {len(numbers):>4}", file=out)
    for rule, count in skipped.most_common():
        print(f"  {'skipped: ' + rule:<58} {count:>4}", file=out)
    if numbers:
        print(f"  {'extension range used':<58} {min(numbers)}-{max(numbers)}", file=out)


def play_scripted_day(world: Any) -> list[str]:
    tenant = world.tenant
    made = world.made
    tenant.add_user(NEW_HIRE, displayName="Nadia New", givenName="Nadia", surname="New",
                    userPrincipalName="nadia.new@contoso.example", mail="nadia.new@contoso.example",
                    accountEnabled=True, userType="Member", jobTitle="Engineer", businessPhones=["+1 425 555 0199"])
    leaver, renamed = made.members[0], made.members[1]
    tenant.change_user(leaver, accountEnabled=False)
    old_name = tenant.users.records[renamed].data["displayName"]
    tenant.change_user(renamed, displayName=f"{old_name} (Sales Lead)")
    tenant.add_user(GUEST, mailbox=None, displayName="Gus Guest", userPrincipalName="gus_fabrikam.example#EXT#@contoso.example",
                    mail="gus@fabrikam.example", accountEnabled=True, userType="Guest")
    def upn(user_id: str) -> str:
        return str(tenant.users.records[user_id].data["userPrincipalName"])

    return [
        "new hire: nadia.new@contoso.example",
        f"leaver (account disabled): {upn(leaver)}",
        f"rename: {upn(renamed)} -> {old_name} (Sales Lead)",
        "guest invited: gus@fabrikam.example",
    ]


async def print_second_sync(service: Service, run: dict[str, Any], out: TextIO) -> None:
    writes = sum(n for kind in (run.get("counts") or {}).values() for action, n in kind.items() if action != "failed")
    print(f"Second sync ({run.get('result')}): {writes} write(s)", file=out)
    for line in run.get("writes", []):
        print(f"  {line}", file=out)
    tenant = service.config.tenants[0]
    guest = await service.sync_store.graph_copy(tenant.name, "user", GUEST)
    if guest is not None:
        rule = decide(guest.data, guest.removed, tenant, set()).rule
        print(f"  skipped {guest.data['userPrincipalName']} ({rule})", file=out)


async def _wait_for_interrupt() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
