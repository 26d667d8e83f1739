"""Any daemon of a shared state answers: two daemons (in this process) on one
PostgreSQL behind one public URL. An OAuth callback that lands on the daemon
that does not own the tenant completes, and the owner syncs with the tokens
the other stored; Sync now sent to the non-owner runs on the owner, and its
run can be followed from the non-owner. Status and metrics name the owner.
While no daemon holds the tenant, Sync now answers 503 instead of a run id."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from conftest import HANG_GUARD, until, write_secret
from daemon.clock import ManualClock
from daemon.config import load_config
from daemon.service import Service
from daemon.tls import client_ssl_context
from sim.idp import FakeApp
from sim.pbx import ScimServer
from sim.world import APP_ID, DIRECTORY, FakeWorld, free_port

ADMIN = "shared-admin-token-0123456789"
OWNER = "pbx-service@contoso.example"
DELEGATED_APP = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"


def config(folder: Path, world: FakeWorld, *, port: int, lb: str, pg_url: str, instance: str, delegated: bool) -> Path:
    text = world.config_path.read_text() if world.config_path else ""
    graph, ca = (re.search(rf'^{key} = "([^"]*)"', text, re.M).group(1)  # type: ignore[union-attr]
                 for key in ("graph_url", "ca_file"))
    folder.mkdir()
    write_secret(folder / "admin-token", ADMIN)
    write_secret(folder / "state-key", "one-key-for-every-daemon-of-the-state-0123456")
    write_secret(folder / "pbx-token", world.pbx.token if world.pbx else "")
    write_secret(folder / "client-secret", (world.workdir / "client-secret").read_text().strip())
    identity = (f'application_id = "{DELEGATED_APP}"' if delegated else
                f'application_id = "{APP_ID}"\nauth_mode = "application"\nclient_secret_file = "client-secret"')
    path = folder / "config.toml"
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "{lb}"
admin_token_file = "admin-token"
[state]
url = "{pg_url}"
instance_name = "{instance}"
lease_seconds = 5
encryption_key_file = "state-key"
[log]
format = "console"
[[tenants]]
name = "contoso"
directory_id = "{DIRECTORY}"
{identity}
authority_url = "{world.idp.base_url}"
graph_url = "{graph}"
ca_file = "{ca}"
sync_time = "0 0 1 1 *"
[tenants.pbx]
scim_url = "{world.pbx.url('shared') if world.pbx else ''}"
token_file = "pbx-token"
[tenants.users]
enabled = true
sync_photo = false
starting_extension_number = "1001"
""")
    return path


@pytest.fixture(params=["delegated"])
async def pair(tmp_path: Path, scim_server_one_by_one: ScimServer, pg_url: str, request: pytest.FixtureRequest
               ) -> AsyncIterator[tuple[FakeWorld, dict[str, Service], str]]:
    world = await FakeWorld(tmp_path / "world", users=6, scim=scim_server_one_by_one, sync_photo=False).start()
    lb = f"http://127.0.0.1:{free_port()}"  # the load balancer's address: no one listens there
    world.idp.register_app(DIRECTORY, FakeApp(DELEGATED_APP, public_redirect_uris={f"{lb}/api/auth/callback/ms365"}))
    world.idp.add_user(OWNER, name="PBX Service")
    assert APP_ID != DELEGATED_APP
    services: dict[str, Service] = {}
    try:
        for name in ("a", "b"):
            path = config(tmp_path / name, world, port=free_port(), lb=lb, pg_url=pg_url, instance=name,
                          delegated=request.param == "delegated")
            services[name] = Service(load_config(path), environ={})
            await services[name].start()

        async def one_owner() -> bool:
            return sum(s.supervisor.ownership.holds("contoso") for s in services.values()) == 1

        await until(one_owner, HANG_GUARD, "one daemon to own the tenant")
        yield world, services, lb
    finally:
        for service in services.values():
            await service.stop()
        await world.stop()


def roles(services: dict[str, Service]) -> tuple[Service, Service]:
    owner = next(s for s in services.values() if s.supervisor.ownership.holds("contoso"))
    other = next(s for s in services.values() if s is not owner)
    return owner, other


def base(service: Service) -> str:
    return f"http://127.0.0.1:{service.bound_port}"


async def test_a_callback_on_the_other_daemon_completes_and_the_owner_syncs(
        pair: tuple[FakeWorld, dict[str, Service], str]) -> None:
    world, services, lb = pair
    owner, other = roles(services)
    assert owner.auth is not None
    link = (await owner.auth.issue_start_link("contoso")).replace(lb, base(owner))  # the start page on the owner
    ssl = client_ssl_context(Path(re.search(r'^ca_file = "([^"]*)"', world.config_path.read_text(), re.M)  # type: ignore[union-attr]
                                       .group(1)))
    async with aiohttp.ClientSession() as session:
        async with session.get(link) as page:
            authorize = re.search(r"id='continue' href='([^']+)'", await page.text()).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
        async with session.get(authorize, ssl=ssl) as form:
            fields = dict(re.findall(r"<input type='hidden' name='([^']+)' value='([^']*)'>", await form.text()))
        fields = {k: v.replace("&amp;", "&").replace("&#x27;", "'") for k, v in fields.items()}
        fields.update(username=OWNER, action="signin")
        async with session.post(authorize.split("?")[0], data=fields, allow_redirects=False, ssl=ssl) as answer:
            callback = answer.headers["Location"]
        assert callback.startswith(lb)
        async with session.get(callback.replace(lb, base(other))) as done:  # the balancer sent it to the other one
            assert done.status == 200, await done.text()

    async def synced_by_owner() -> bool:
        schedule = owner.supervisor.schedules["contoso"]
        return any(r.trigger == "authorized" and r.result == "success" for r in schedule.recent.values())

    await until(synced_by_owner, HANG_GUARD, "the owner's run after the authorization")
    assert not any(r.trigger == "authorized" for r in other.supervisor.schedules["contoso"].recent.values())
    assert world.made is not None
    row = await owner.store.tenant("contoso")
    assert row is not None and row.auth_state == "authorized" and row.auth_owner == OWNER


@pytest.mark.parametrize("pair", ["application"], indirect=True)  # runs without an admin's sign-in first
async def test_sync_now_on_the_other_daemon_runs_on_the_owner_and_is_followed_from_either(
        pair: tuple[FakeWorld, dict[str, Service], str], tmp_path: Path) -> None:
    world, services, _ = pair
    owner, other = roles(services)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{base(other)}/api/tenants/contoso/sync") as answer:
            assert answer.status == 202
            run_id = (await answer.json())["run_id"]

        async def ran_on_owner() -> bool:
            progress = owner.supervisor.schedules["contoso"].progress(run_id)
            return progress is not None and progress.state == "finished"

        await until(ran_on_owner, HANG_GUARD, "the forwarded run on the owner")
        assert other.supervisor.schedules["contoso"].progress(run_id) is None  # it never ran where it was asked
        for service in (other, owner):
            async with session.get(f"{base(service)}/api/tenants/contoso/runs/{run_id}") as status:
                body = await status.json()
                assert body["state"] == "finished" and body["run_id"] == run_id and body["result"] == "success", body
        async with session.get(f"{base(other)}/api/status") as status:
            (tenant,) = (await status.json())["tenants"]
            assert tenant["owner"] == owner.supervisor.ownership.leases.instance
        async with session.get(f"{base(owner)}/metrics") as metrics:
            text = await metrics.text()
            assert f'm365sync_tenant_owner{{instance="{owner.supervisor.ownership.leases.instance}",tenant="contoso"}} 1.0' in text
            assert 'tenant="contoso"' in text
        async with session.get(f"{base(other)}/metrics") as metrics:
            assert 'tenant="contoso"' not in await metrics.text()  # the owner exports the tenant's series
    assert world.made is not None and world.pbx is not None
    assert world.sim is not None and world.sim.requests("^/users")  # the owner's run read Graph


async def test_sync_now_while_no_daemon_holds_the_tenant_answers_503_then_runs_once_one_does(
        tmp_path: Path, scim_server_one_by_one: ScimServer, pg_url: str) -> None:
    """One daemon whose lease session is cut stands back one lease interval, holding nothing:
    Sync now then says so (503, Retry-After) instead of handing out a run id that never runs."""
    world = await FakeWorld(tmp_path / "world", users=3, scim=scim_server_one_by_one, sync_photo=False).start()
    clock = ManualClock()  # lease rounds and the stand-back move only when the test says so
    path = config(tmp_path / "a", world, port=free_port(), lb=f"http://127.0.0.1:{free_port()}", pg_url=pg_url,
                  instance="a", delegated=False)
    service = Service(load_config(path), environ={}, clock=clock)
    try:
        await service.start()
        ownership, schedule = service.supervisor.ownership, service.supervisor.schedules["contoso"]
        startup = schedule.current or schedule.queued
        assert ownership.holds("contoso") and startup is not None
        assert (await schedule.wait(startup.run_id)).result == "success"
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute("SELECT pg_terminate_backend(backend_pid) FROM instances WHERE name = 'a'")
        finally:
            await admin.close()

        async def stands_back() -> bool:
            return not ownership.holds("contoso")

        await until(stands_back, HANG_GUARD, "the daemon to notice its lease session was cut")
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{base(service)}/api/tenants/contoso/sync") as answer:
                body = await answer.json()
                assert answer.status == 503, body
                retry_after = int(answer.headers["Retry-After"])
            assert "run_id" not in body and 1 <= retry_after <= 7  # stand-back (5 s) and one round (5/3 s), at most
            assert body["error"] == (f"no daemon holds tenant contoso's lease right now; "
                                     f"try again in {retry_after} s")
            assert schedule.queued is None and list(schedule.recent) == [startup.run_id]  # nothing was queued

            async def taken_back() -> bool:
                await clock.advance_async(5 / 3)  # one lease round
                return ownership.holds("contoso")

            await until(taken_back, HANG_GUARD, "the daemon to take its tenant back after standing back")
            async with session.post(f"{base(service)}/api/tenants/contoso/sync") as answer:
                assert answer.status == 202, await answer.text()
                run_id = (await answer.json())["run_id"]
        assert (await schedule.wait(run_id)).result == "success"
    finally:
        await service.stop()
        await world.stop()
