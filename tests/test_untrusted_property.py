"""Property: whatever Graph sends for users, groups and contacts (lone
surrogates, NUL, numbers for text, a value for a list, wrong types, missing
keys, huge values), a recorded run against the real scim2-server ends
without an exception escaping; every valid object lands exactly once; every
invalid one is recorded as a failed object and shown by ``status``; the run
has a recorded result (``partial`` exactly when something was refused); and
a second run writes nothing.

CI runs a fixed, derandomized budget; ``HYPOTHESIS_PROFILE=long`` runs many
more examples locally (see the README, *Development*)."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import uuid
from dataclasses import dataclass, field
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
from daemon.retry import RetryPolicy, Transport
from daemon.sync.kinds import Clients
from daemon.sync.runner import TenantRunner
from graph_fixtures import TOKEN, StaticTokens
from pbx_fixtures import _used_tenants
from sim.app import Simulator
from sim.graph import SimSettings
from sim.pbx import ScimServer
from sim.store import SimTenant
from state.open import open_database
from state.store import Store
from state.sync_store import SyncStore
from sync_fixtures import WRITE_OPS, OneTenantConfig, _sum_metric, tenant_config

PROFILES = {
    "ci": settings(max_examples=8, derandomize=True, deadline=None, database=None,
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


@dataclass
class Generated:
    users: list[tuple[dict[str, Any], bool]]
    groups: list[tuple[dict[str, Any], bool]]
    contacts: list[tuple[dict[str, Any], bool]]
    ids: dict[tuple[str, str], bool] = field(default_factory=dict)  # (kind, id) -> valid


generated = st.builds(Generated, st.lists(graph_object(USER_FIELDS), max_size=5),
                      st.lists(graph_object(GROUP_FIELDS), max_size=3), st.lists(graph_object(CONTACT_FIELDS), max_size=5))


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


async def check(server: ScimServer, world: Generated) -> None:
    clock = FakeClock()
    sim_tenant = SimTenant(clock)
    groups = populate(sim_tenant, world)
    sim = TestServer(Simulator(sim_tenant, SimSettings(), accepted_tokens={TOKEN}).app(), host="127.0.0.1")
    await sim.start_server()
    pbx_tenant = f"prop{uuid.uuid4().hex[:10]}"
    _used_tenants.append(pbx_tenant)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = await open_database(Path(tmp) / "state.db")
            try:
                async with aiohttp.ClientSession() as session:
                    await one_example(server, world, groups, session, db, clock, str(sim.make_url("")).rstrip("/"),
                                      pbx_tenant, Path(tmp))
            finally:
                await db.close()
    finally:
        await sim.close()


async def one_example(server: ScimServer, world: Generated, groups: list[str], session: aiohttp.ClientSession,
                      db: Any, clock: FakeClock, graph_url: str, pbx_tenant: str, tmp: Path) -> None:
    metrics = Metrics()
    transport = Transport(session, "t", metrics, clock=clock, retry=RetryPolicy(max_attempts=2), rng=random.Random(7))
    graph = GraphClient(transport, graph_url, StaticTokens())
    pbx = PbxClient(Transport(session, "t", metrics, clock=clock), server.url(pbx_tenant), server.token)
    store, sync_store = Store(db, clock=clock.time), SyncStore(db, clock=clock.time)
    await store.register_tenant("t", "d", "a")
    tenant = tenant_config(tmp, groups=groups, groups_starting_extension_number="2000",
                           personal_contacts={"enabled": True, "require_phone": False})
    runner = SimRunner(tenant, store, sync_store, None, session, metrics, clock=clock, now=clock.time)  # type: ignore[arg-type]
    runner.clients = Clients(graph, pbx, pbx)

    first = await runner.run("schedule")  # no exception escapes: the runner returns
    refused = {key for key, valid in world.ids.items() if not valid}
    assert first.result == ("partial" if refused else "success"), (first.result, first.report.error,
                                                                    first.report.failures)
    assert not {("group", g) for g in first.report.groups.missing} & refused  # refused, not unknown
    recorded = await store.last_run("t")
    assert recorded is not None and recorded.result == first.result
    landed = await on_pbx(pbx)
    wanted = {key for key, valid in world.ids.items() if valid} | {("user", OWNER)}
    assert set(landed) == wanted, first.report.failures
    assert all(safe(data) for data in landed.values())
    failing = {(kind, graph_id) for kind, graph_id, *_ in await sync_store.failing("t")}
    assert failing == refused

    (shown,) = await status.collect(OneTenantConfig(tenant, tmp / "m365sync.toml"),  # type: ignore[arg-type]
                                    store, sync_store)
    assert {(f["kind"], f["id"]) for f in shown.failed} == refused
    status.as_text([shown])  # renders whatever the objects held

    writes = pbx_writes(metrics)
    assert writes >= 1  # the owner, at least, was created
    second = await runner.run("schedule")
    assert second.result == "success", second.report.failures
    assert pbx_writes(metrics) == writes


@PROFILE
@given(world=generated)
def test_whatever_graph_sends_every_valid_object_lands_once_and_every_invalid_one_is_recorded(
        scim_server: ScimServer, world: Generated) -> None:
    asyncio.run(check(scim_server, world))
