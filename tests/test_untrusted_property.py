"""Property: whatever Graph sends for users, groups, contacts and calendar
events (lone surrogates, NUL, numbers for text, a value for a list, wrong
types, missing keys, huge values, unreadable date-times and zones, all-day
flags as text), and however the PBX answers the writes of two runs (no id,
an id it never serves, not JSON, a partial /Bulk, a 400 after applying, a
dropped connection: ``scim_proxy.answer_faults``), recorded runs against the
real scim2-server end without an exception escaping and each with its
result; once a clean run followed, every valid object is on the PBX exactly
once and every valid event's busy window too; every invalid object is
recorded as a failed object and every invalid event named, both shown by
``status --json``; and a final clean run writes nothing.

CI runs a fixed, derandomized budget; ``HYPOTHESIS_PROFILE=long`` runs many
more examples locally (see the README, *Development*)."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from daemon import status
from daemon.clock import FakeClock
from daemon.graph.client import GraphClient
from daemon.metrics import Metrics
from daemon.pbx.client import PbxClient
from daemon.pbx.schema import PBX_USER
from daemon.retry import RetryPolicy, Transport
from daemon.sync.intake import REJECTED_PREFIX as REJECTED
from daemon.sync.kinds import ALL_KINDS, Clients
from daemon.sync.runner import TenantRunner
from graph_fixtures import TOKEN, StaticTokens
from pbx_fixtures import _used_tenants
from scim_proxy import ANSWER_FAULTS, RewritingProxy, answer_faults, rewriting_proxy
from sim.app import Simulator
from sim.graph import SimSettings
from sim.pbx import ScimServer
from sim.store import SimTenant
from state.open import open_database
from state.store import Store
from state.sync_store import SyncStore
from sync_fixtures import WRITE_OPS, OneTenantConfig, _sum_metric, tenant_config
from untrusted_events import Event, event, put_events, spoiling_middleware

PROFILES = {
    "ci": settings(max_examples=20, derandomize=True, deadline=None, database=None,
                   phases=[Phase.explicit, Phase.generate],  # a failure is reported as found: shrinking takes minutes
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]),
    "long": settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
}
PROFILE = PROFILES[os.environ.get("HYPOTHESIS_PROFILE", "ci")]
OWNER = "00000000-0000-4000-8000-0000000000ff"


def pbx_writes(metrics: Metrics) -> int:
    """PBX write requests so far, from the client's own metrics (the server's log lags its answers)."""
    return _sum_metric(metrics, "m365sync_pbx_requests_total", WRITE_OPS)


# --- values Graph might send: normalized (kept) or refused ---

ODD = st.sampled_from(["\ud800", "\udfff", "\0", "\ud83d\ude00", "\u200b", "", " "])
odd_text = st.builds(lambda a, b, c: a + b + c, st.text(max_size=8), ODD, st.text(max_size=8))
kept_text = st.one_of(st.none(), st.text(max_size=20), odd_text, st.integers(-10**9, 10**9),
                      st.just("y" * 1024))
refused_text = st.one_of(st.booleans(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                         st.lists(st.integers(), min_size=1, max_size=2), st.just("z" * 1025), st.just("w" * 20000))
kept_list = st.one_of(st.none(), st.lists(kept_text.filter(lambda v: v is not None), max_size=3), kept_text)
refused_list = st.one_of(st.lists(refused_text, min_size=1, max_size=2), st.booleans(), st.just(["1"] * 101))
kept_addresses = st.one_of(st.none(), st.text(max_size=20), st.dictionaries(st.just("address"), kept_text),
                           st.lists(st.fixed_dictionaries({"address": kept_text}, optional={"name": kept_text}),
                                    max_size=2))
refused_addresses = st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), min_size=1, max_size=2),
                              st.lists(st.fixed_dictionaries({"address": refused_text}), min_size=1, max_size=1))

TEXT, LIST, ADDRESSES = "text", "list", "addresses"
VALUES = {TEXT: (kept_text, refused_text), LIST: (kept_list, refused_list), ADDRESSES: (kept_addresses, refused_addresses)}
USER_FIELDS = {"displayName": TEXT, "givenName": TEXT, "surname": TEXT, "jobTitle": TEXT, "department": TEXT,
               "mail": TEXT, "mobilePhone": TEXT, "businessPhones": LIST}
GROUP_FIELDS = {"displayName": TEXT, "mail": TEXT}
CONTACT_FIELDS = {"displayName": TEXT, "givenName": TEXT, "surname": TEXT, "companyName": TEXT, "jobTitle": TEXT,
                  "mobilePhone": TEXT, "businessPhones": LIST, "homePhones": LIST, "emailAddresses": ADDRESSES}


@st.composite
def graph_object(draw: st.DrawFn, fields: dict[str, str]) -> tuple[dict[str, Any], bool]:
    """(properties, valid): any property may be missing; an invalid object has at least one refused value."""
    valid = draw(st.booleans())
    properties: dict[str, Any] = {}
    for name, shape in fields.items():
        if draw(st.booleans()):
            properties[name] = draw(VALUES[shape][0])
    if not valid:
        name = draw(st.sampled_from(sorted(fields)))
        properties[name] = draw(VALUES[fields[name]][1])
    return properties, valid


DAY = FakeClock().now().replace(hour=0, minute=0)  # the fake clock's first day, midnight UTC


@dataclass
class Generated:
    users: list[tuple[dict[str, Any], bool]]
    groups: list[tuple[dict[str, Any], bool]]
    contacts: list[tuple[dict[str, Any], bool]]
    events: list[Event]  # in the owner's calendar
    faults: list[str]  # how the PBX answers each write of the first two runs, in turn
    ids: dict[tuple[str, str], bool] = field(default_factory=dict)  # (kind, id) -> valid


generated = st.builds(Generated, st.lists(graph_object(USER_FIELDS), max_size=5),
                      st.lists(graph_object(GROUP_FIELDS), max_size=3), st.lists(graph_object(CONTACT_FIELDS), max_size=5),
                      st.lists(event(DAY), max_size=6), st.lists(st.sampled_from(ANSWER_FAULTS), max_size=10))


def populate(tenant: SimTenant, world: Generated) -> list[str]:
    """The generated objects in the simulator's store (sent as JSON, "\\ud800" and all); the group ids."""
    tenant.add_user(OWNER, displayName="Owner", userPrincipalName="owner@contoso.example", accountEnabled=True,
                    userType="Member")
    for index, (properties, valid) in enumerate(world.users):
        user_id = f"00000000-0000-4000-8000-{index:012d}"
        tenant.add_user(user_id, **{"userPrincipalName": f"p{index}@contoso.example", "accountEnabled": True,
                                                  "userType": "Member", **properties})
        world.ids[("user", user_id)] = valid
    groups = []
    for index, (properties, valid) in enumerate(world.groups):
        group_id = f"11111111-0000-4000-8000-{index:012d}"
        tenant.add_group(group_id, members=[OWNER], **properties)
        groups.append(group_id)
        world.ids[("group", group_id)] = valid
    for index, (properties, valid) in enumerate(world.contacts):
        tenant.put_contact(OWNER, f"c{index}", **properties)
        world.ids[("contact", f"c{index}")] = valid
    return groups


class SimRunner(TenantRunner):
    """The real runner (locks, run record, result), with the test's clients."""

    clients: Clients

    def _clients(self) -> Clients:
        return self.clients


def safe(value: Any) -> bool:
    """Nothing on the PBX that UTF-8 cannot carry, and no NUL."""
    if isinstance(value, str):
        return "\0" not in value and bool(value.encode("utf-8") or True)
    if isinstance(value, dict):
        return all(safe(k) and safe(v) for k, v in value.items())
    if isinstance(value, list):
        return all(safe(v) for v in value)
    return True


async def on_pbx(pbx: PbxClient) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource, kind in (("User", "user"), ("Group", "group"), ("Contact", "contact")):
        async for obj in pbx.iter_objects(resource):
            assert obj.external_id is not None and (kind, obj.external_id) not in found, "landed twice"
            found[(kind, obj.external_id)] = dict(obj.data)
    return found


async def busy_on_pbx(pbx: PbxClient) -> list[tuple[str, str, str]]:
    """The owner's busy windows as the PBX stores them, times as ...Z."""
    owner = await pbx.find_by_external_id("User", OWNER)
    assert owner is not None
    return [(utc(b["start"]), utc(b["end"]), b["showAs"]) for b in owner.data.get(PBX_USER, {}).get("busy", [])]


def utc(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def check(server: ScimServer, world: Generated) -> None:
    clock = FakeClock()
    sim_tenant = SimTenant(clock)
    groups = populate(sim_tenant, world)
    events = put_events(sim_tenant, OWNER, world.events)
    app = Simulator(sim_tenant, SimSettings(), accepted_tokens={TOKEN}).app()
    app.middlewares.append(spoiling_middleware(events))
    sim = TestServer(app, host="127.0.0.1")
    await sim.start_server()
    pbx_tenant = f"prop{uuid.uuid4().hex[:10]}"
    _used_tenants.append(pbx_tenant)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = await open_database(Path(tmp) / "state.db")
            try:
                async with aiohttp.ClientSession() as session, \
                        rewriting_proxy(server.url(pbx_tenant)) as (proxy, proxy_url):
                    graph_url = str(sim.make_url("")).rstrip("/")
                    await one_example(server, world, groups, session, db, clock, graph_url, pbx_tenant, Path(tmp),
                                      proxy, proxy_url)
            finally:
                await db.close()
    finally:
        await sim.close()


async def one_example(server: ScimServer, world: Generated, groups: list[str], session: aiohttp.ClientSession,
                      db: Any, clock: FakeClock, graph_url: str, pbx_tenant: str, tmp: Path,
                      proxy: RewritingProxy, proxy_url: str) -> None:
    metrics = Metrics()
    transport = Transport(session, "t", metrics, clock=clock, retry=RetryPolicy(max_attempts=2), rng=random.Random(7))
    graph = GraphClient(transport, graph_url, StaticTokens())
    pbx = PbxClient(Transport(session, "t", metrics, clock=clock), proxy_url, server.token)
    direct = PbxClient(Transport(session, "t", Metrics(), clock=clock), server.url(pbx_tenant), server.token)
    store, sync_store = Store(db, clock=clock.time), SyncStore(db, clock=clock.time)
    await store.register_tenant("t", "d", "a")
    tenant = tenant_config(tmp, groups=groups, groups_starting_extension_number="2000",
                           personal_contacts={"enabled": True, "require_phone": False}, events={"enabled": True})
    config = OneTenantConfig(tenant, tmp / "m365sync.toml")
    runner = SimRunner(tenant, store, sync_store, None, session, metrics, clock=clock, now=clock.time)  # type: ignore[arg-type]
    runner.clients = Clients(graph, pbx, pbx)
    refused = {key for key, valid in world.ids.items() if not valid}

    # Two runs whose write answers are spoiled as drawn, three hours apart (objects that failed
    # wait 1 h, then 2 h), then a clean one: no exception escapes, and every run is recorded.
    results, shown_failures = [], []
    faults = answer_faults(world.faults)  # one list, used up write by write over the first two runs
    for index in range(3):
        if index:
            clock.advance(3 * 3600)
        proxy.rewrite = faults if index < 2 else None
        result = await runner.run("schedule", kinds=ALL_KINDS)  # the runner returns, whatever happened
        results.append(result)
        (shown,) = status.as_json(await status.collect(config, store, sync_store))["tenants"]  # type: ignore[arg-type]
        shown_failures += shown["failures"]
    recorded = {run.id: run.result for run in await store.recent_runs("t", 10)}
    assert recorded == {r.run_id: r.result for r in results}  # every run has its result, none left running
    clean = results[-1]
    assert all(REJECTED in f for f in clean.report.failures), clean.report.failures  # no write failed
    assert clean.result == ("partial" if clean.report.failures else "success"), (clean.report.error, clean.result)

    landed = await on_pbx(direct)  # each object at most once
    wanted = {key for key, valid in world.ids.items() if valid} | {("user", OWNER)}
    assert set(landed) == wanted, (clean.report.failures, [r.report.error for r in results])
    assert all(safe(data) for data in landed.values())
    # Without faults no create is sent twice (a busy list is PATCHed again as past events drop out).
    assert [w for w in proxy.written_twice() if w.startswith("POST")] == [] or world.faults, proxy.writes
    failing = {(kind, graph_id) for kind, graph_id, *_ in await sync_store.failing("t")}
    assert failing == refused
    assert {(f["kind"], f["id"]) for f in shown["failed"]} == refused
    assert not {("group", g) for g in clean.report.groups.missing} & refused  # refused, not unknown
    status.as_text(await status.collect(config, store, sync_store))  # type: ignore[arg-type]  # renders whatever the objects held

    # The events: every valid one's window is on the PBX, once; every spoiled one is named in status.
    moment = clock.now()  # the clean run's time, and the last run's: no event ends in between
    window_end = moment.replace(hour=0, minute=0) + timedelta(days=tenant.events.window_days)
    expected = sorted({w for e in world.events if e.spoil is None
                       if (w := e.window(list(tenant.events.show_as), moment, window_end)) is not None})
    assert await busy_on_pbx(direct) == expected
    for event_id, generated in events_by_id(world).items():
        if generated.spoil is not None:
            named = [f for f in shown_failures if REJECTED in f and
                     (f"{event_id}: " in f or "without an id" in f)]
            assert named, (generated.spoiled_by, shown_failures)

    writes = pbx_writes(metrics)
    assert writes >= 1  # the owner, at least, was created
    again = await runner.run("schedule", kinds=ALL_KINDS)
    assert again.result == "success", again.report.failures
    assert pbx_writes(metrics) == writes  # a final clean run writes nothing


def events_by_id(world: Generated) -> dict[str, Event]:
    return {f"ev{index}": generated for index, generated in enumerate(world.events)}


@PROFILE
@given(world=generated)
def test_whatever_graph_and_the_pbx_answer_every_valid_object_lands_once_and_every_invalid_one_is_recorded(
        scim_server: ScimServer, world: Generated) -> None:
    asyncio.run(check(scim_server, world))
