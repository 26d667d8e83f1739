"""Freshness at N users (default 10,000): the time from a change in Graph to
the end of the read that wrote it to the PBX, and what the steady state costs.

One daemon (in this process, real clock) against the fake world: the Graph
simulator, the fake Entra, scim2-server as the PBX. The config names three
groups with ``groups_starting_extension_number``, so a membership change is
a PBX write. Scenarios:

- ``push``: change notifications on, the simulator notifying at once
  (``auto_deliver``). After the start-up run and once the daemon's keeper
  says every wanted subscription is active, each trial makes one change at a
  time (a new user, a leaver, a group membership; with ``--mailboxes`` also
  a contact and a calendar event) and waits for the notified read's
  freshness observation (``m365sync_freshness_seconds``), which comes right
  after the read that wrote it returns.
- ``poll``: no public address (poll mode), default poll intervals. Each
  trial waits a random part of ``users.poll_seconds`` (so changes fall
  anywhere in the interval), makes a new user, a leaver and a group
  membership at once, and waits for the first recorded users-poll run that
  wrote each (a users poll that writes nothing leaves no record).
- ``steady``: push with every mailbox kind on; once subscribed and settled,
  a window of ``--minutes``: this process's CPU time (the daemon and the
  simulator answering it: an upper bound of the daemon's) and the Graph
  requests a minute, subscriptions and presence left out.

The scheduled-only design is computed, not measured: a change waits for the
next ``sync_time`` (every 6 hours in the guide).

    .venv/bin/python -m bench.freshness --scenario push --users 10000 --trials 5
    .venv/bin/python -m bench.freshness --scenario push --users 1000 --mailboxes --trials 5
    .venv/bin/python -m bench.freshness --scenario poll --users 10000 --trials 5
    .venv/bin/python -m bench.freshness --scenario steady --users 10000 --minutes 5
    .venv/bin/python -m bench.freshness --scenario steady --users 1000 --minutes 10 --backstop-seconds 300

``steady`` also counts, minute by minute, the requests, the ``$batch``es and
the mailboxes whose contacts and calendars they read (the mailbox backstop's
slices: min/max/mean), and how often each mailbox's contacts were read in
the window (``--backstop-seconds`` shortens the backstop's interval so the
window holds whole rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon.config import load_config
from daemon.service import Service
from sim.pbx import ScimServer
from sim.world import FakeWorld

TENANT = "contoso"
SCHEDULE_HOURS = 6.0
GROUPS_START = "90001"
MAILBOX_SECTIONS = """
[tenants.personal_contacts]
enabled = true

[tenants.events]
enabled = true
"""
LEFT_OUT = re.compile(r"^/subscriptions|^/communications/")  # renewals and presence: not in the target


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def configure(world: FakeWorld, groups: list[str], *, push: bool, mailboxes: bool, backstop: int | None) -> None:
    """The bench's settings: three numbered groups, a public address (push), the mailbox kinds (``backstop``:
    their ``personal_contacts.poll_seconds``, the mailbox backstop's interval)."""
    assert world.config_path is not None
    text = world.config_path.read_text()
    port = re.search(r'^listen = "127\.0\.0\.1:(\d+)"', text, re.M).group(1)  # type: ignore[union-attr]
    if push:
        text = text.replace("[server]\n", f'[server]\npublic_url = "http://127.0.0.1:{port}"\n', 1)
    names = ", ".join(f'"{g}"' for g in groups)
    text = text.replace('sync_time = "0 */6 * * *"\n', f'sync_time = "0 */6 * * *"\ngroups = [{names}]\n'
                        f'groups_starting_extension_number = "{GROUPS_START}"\n')
    sections = MAILBOX_SECTIONS if backstop is None else MAILBOX_SECTIONS.replace(
        "[tenants.personal_contacts]\nenabled = true\n", f"[tenants.personal_contacts]\nenabled = true\n"
        f"poll_seconds = {backstop}\n")
    world.config_path.write_text(text + (sections if mailboxes else ""))


def _observed(service: Service, kind: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "m365sync_freshness_seconds_count", {"tenant": TENANT, "kind": kind, "trigger": "notification"})
    return value or 0.0


async def _until(check: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"waited in vain for {what}")


def _event(start: datetime) -> dict[str, Any]:
    def moment(at: datetime) -> dict[str, str]:
        return {"dateTime": at.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}

    return {"showAs": "busy", "isCancelled": False, "isAllDay": False, "start": moment(start),
            "end": moment(start + timedelta(minutes=30))}


class Changes:
    """One change of each kind per call, to users and groups the generator made."""

    def __init__(self, world: FakeWorld, groups: list[str]) -> None:
        assert world.made is not None
        self.world, self.groups = world, groups
        self.members = list(world.made.members)

    def make(self, kind: str, trial: int) -> None:
        tenant = self.world.tenant
        if kind == "new user":
            tenant.add_user(f"bench-hire-{trial}", displayName=f"Hire {trial}",
                            userPrincipalName=f"hire{trial}@contoso.example", accountEnabled=True,
                            userType="Member", mail=f"hire{trial}@contoso.example")
        elif kind == "leaver":
            tenant.soft_delete_user(self.members[-1 - trial])
        elif kind == "group membership":
            group = self.groups[trial % len(self.groups)]
            tenant.add_member(group, next(m for m in self.members if m not in tenant.members[group].current))
        elif kind == "contact":
            tenant.put_contact(self.members[trial], f"bench-contact-{trial}", displayName=f"Bench {trial}",
                               mobilePhone=f"+1 555 01{trial:02d}")
        else:
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
            tenant.put_event(self.members[trial], f"bench-event-{trial}", **_event(start))


PUSH_LABELS = {"new user": "user", "leaver": "user", "group membership": "group", "contact": "contact",
               "event": "busy"}
POLL_SIGNS = {"new user": ("user", "create"), "leaver": ("user", "disable"), "group membership": ("group", "update")}


async def _push(service: Service, changes: Changes, args: argparse.Namespace) -> dict[str, list[float]]:
    kinds = list(PUSH_LABELS) if args.mailboxes else list(PUSH_LABELS)[:3]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for trial in range(args.trials):
        for kind in kinds:
            label = PUSH_LABELS[kind]
            before = _observed(service, label)
            changed_at = time.time()
            changes.make(kind, trial)

            async def read(label: str = label, before: float = before) -> bool:
                return _observed(service, label) > before

            await _until(read, 300, f"the notified read of a {kind}")
            results[kind].append(time.time() - changed_at)
    return results


async def _poll_run_end(service: Service, changed_at: float, kind: str, action: str) -> float | None:
    """The end of the first recorded users-poll run after ``changed_at`` that wrote ``action`` to a ``kind``."""
    for run in sorted(await service.store.recent_runs(TENANT, 50), key=lambda r: r.finished_at or 0.0):
        if run.trigger == "users-poll" and run.finished_at is not None and run.finished_at > changed_at \
                and run.summary.get("counts", {}).get(kind, {}).get(action):
            return run.finished_at
    return None


async def _poll(service: Service, changes: Changes, args: argparse.Namespace) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {k: [] for k in POLL_SIGNS}
    interval = service.config.tenants[0].users.poll_seconds
    rng = random.Random(args.seed)
    for trial in range(args.trials):
        await asyncio.sleep(rng.uniform(0, interval))  # the change falls anywhere in the poll's interval
        changed_at = time.time()
        for kind in POLL_SIGNS:
            changes.make(kind, trial)
        deadline = time.monotonic() + 3 * interval + 60
        for kind, (written, action) in POLL_SIGNS.items():
            while (end := await _poll_run_end(service, changed_at, written, action)) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no users poll wrote the {kind}")
                await asyncio.sleep(0.05)
            results[kind].append(end - changed_at)
    return results


async def _steady(service: Service, world: FakeWorld, args: argparse.Namespace) -> dict[str, Any]:
    """The window: CPU, Graph requests a minute, and minute by minute what the mailbox backstop read."""
    assert world.sim is not None
    await asyncio.sleep(args.settle)
    since, cpu, wall = len(world.sim.log), time.process_time(), time.monotonic()
    minutes, mark = [], since
    for _ in range(max(1, round(args.minutes))):
        await asyncio.sleep(60)
        minutes.append(_minute(world.sim.log[mark:]))
        mark = len(world.sim.log)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    requests = [r for r in world.sim.log[since:] if not r.in_batch and not LEFT_OUT.search(r.path)]
    by_path = Counter(re.sub(r"/users/[^/]+/", "/users/{id}/", r.path) for r in requests)
    read = Counter(user for minute in minutes for user in minute.pop("contact_mailboxes"))
    return {"cpu_percent": round(100 * cpu / wall, 2), "window_s": round(wall, 1),
            "graph_requests_per_minute": round(len(requests) * 60 / wall, 2),
            "by_path": dict(by_path.most_common(10)), "load": os.getloadavg(),
            "per_minute": {key: _spread([m[key] for m in minutes]) for key in minutes[0]},
            "minutes": minutes, "contact_reads_per_mailbox": dict(sorted(Counter(read.values()).items()))}


def _minute(log: list[Any]) -> dict[str, Any]:
    """One minute of Graph requests: all (renewals and presence left out), ``$batch``es, and the mailboxes
    whose contacts and calendars the batches read."""
    requests = [r for r in log if not r.in_batch and not LEFT_OUT.search(r.path)]
    items = [r.path for r in log if r.in_batch]
    contacts = {path.split("/")[2] for path in items if "/contactFolders" in path}
    calendars = {path.split("/")[2] for path in items if "/calendarView/delta" in path}
    return {"requests": len(requests), "batches": sum(1 for r in requests if r.path == "/$batch"),
            "contact_mailboxes": sorted(contacts), "mailboxes": len(contacts), "calendars": len(calendars)}


def _spread(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 1)}


async def _subscribed(service: Service, kinds: tuple[str, ...]) -> None:
    notifications = service.notifications
    assert notifications is not None

    async def covered() -> bool:
        return all(notifications.pushed(TENANT, kind) for kind in kinds)

    await _until(covered, 3600, "every wanted subscription")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    push = args.scenario != "poll"
    mailboxes = args.mailboxes or args.scenario == "steady"
    with tempfile.TemporaryDirectory(prefix="m365sync-freshness-") as tmp, ScimServer() as scim:
        world = FakeWorld(Path(tmp), users=args.users, scim=scim, sync_photo=False)
        await world.start()
        assert world.sim is not None and world.made is not None
        groups = world.made.groups[:3]
        configure(world, groups, push=push, mailboxes=mailboxes, backstop=args.backstop_seconds)
        world.sim.subscriptions.auto_deliver = True
        assert world.config_path is not None
        service = Service(load_config(world.config_path), environ={})
        started = time.monotonic()
        await service.start()
        result: dict[str, Any] = {"scenario": args.scenario, "users": args.users, "trials": args.trials,
                                  "mailboxes": mailboxes, "backstop_seconds": args.backstop_seconds or 1800}
        try:
            if push:
                await _subscribed(service, ("user", "group", "contact", "busy") if mailboxes else ("user", "group"))
            else:
                await _until(lambda: _startup_done(service), 3600, "the start-up run")
            result["setup_s"] = round(time.monotonic() - started, 1)
            result["subscriptions"] = len(world.sim.subscriptions.subscriptions)
            changes = Changes(world, groups)
            if args.scenario == "steady":
                result["steady"] = await _steady(service, world, args)
            else:
                seconds = await (_push if push else _poll)(service, changes, args)
                result["seconds"] = {k: sorted(round(v, 3) for v in values) for k, values in seconds.items()}
            result["load"] = os.getloadavg()
        finally:
            await service.stop()
            await world.stop()
    return result


async def _startup_done(service: Service) -> bool:
    return any(r.trigger == "startup" and r.finished_at is not None for r in await service.store.recent_runs(TENANT, 5))


def report(result: dict[str, Any]) -> str:
    lines = [f"{result['scenario']} at {result['users']:,} users ({platform.machine()}, Python "
             f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}, load {result['load'][0]:.2f}); "
             f"start-up and subscriptions ({result['subscriptions']}): {result['setup_s']} s", ""]
    if "steady" in result:
        steady = result["steady"]
        lines += [f"CPU {steady['cpu_percent']} % of one core, {steady['graph_requests_per_minute']} Graph "
                  f"requests a minute over {steady['window_s']} s: {json.dumps(steady['by_path'])}",
                  f"mailbox backstop every {result['backstop_seconds']} s, per minute (min/max/mean): "
                  + "; ".join(f"{key} {v['min']}/{v['max']}/{v['mean']}" for key, v in steady["per_minute"].items()),
                  f"contact reads per mailbox in the window (reads: mailboxes): {steady['contact_reads_per_mailbox']}"]
        return "\n".join(lines) + "\n"
    lines += ["| change | p50 s | p99 s | max s | scheduled-only p99 (computed) |", "|---|---|---|---|---|"]
    for kind, values in result["seconds"].items():
        lines.append(f"| {kind} | {percentile(values, 0.5):.2f} | {percentile(values, 0.99):.2f} | {max(values):.2f} "
                     f"| {0.99 * SCHEDULE_HOURS * 3600:,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("push", "poll", "steady"), default="push")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--mailboxes", action="store_true", help="push: contacts and calendars on, their rows too")
    parser.add_argument("--minutes", type=float, default=5.0, help="steady: the measured window")
    parser.add_argument("--settle", type=float, default=60.0, help="steady: seconds waited before the window")
    parser.add_argument("--backstop-seconds", type=int, help="steady: personal_contacts.poll_seconds (1800)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw result here")
    options = parser.parse_args()
    outcome = asyncio.run(main(options))
    if options.json is not None:
        options.json.write_text(json.dumps(outcome, indent=2) + "\n")
    print(report(outcome))
