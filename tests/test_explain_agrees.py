"""``explain`` answers from the planner's own decision: a shared mailbox is
neither given an extension by the planner nor called active by explain."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from daemon import commands
from daemon.sync.user_scope import decide_stored
from sync_fixtures import SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)
from test_contact_sync import add_user


async def _explain(sync_env: SyncEnv, reference: str, monkeypatch: pytest.MonkeyPatch) -> str:
    @asynccontextmanager
    async def stores(config: Any, metrics: Any, **_: Any) -> AsyncIterator[commands.Stores]:
        yield commands.Stores(sync_env.db, sync_env.store, sync_env.sync_store, None)  # type: ignore[arg-type]

    class OneTenant:
        def tenant(self, name: str) -> Any:
            return sync_env.tenant

    monkeypatch.setattr(commands, "open_stores", stores)
    out = io.StringIO()
    assert await commands.explain_user(OneTenant(), sync_env.tenant.name, reference, out) == 0  # type: ignore[arg-type]
    return out.getvalue()


async def test_explain_and_the_planner_agree_on_a_shared_mailbox(sync_env: SyncEnv,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    owner = add_user(sync_env, 1)
    reception = add_user(sync_env, 2, mailbox="shared", displayName="Reception")
    sync_env.configure(shared_mailbox={"enabled": True})
    await sync_env.run()
    on_pbx = await sync_env.pbx_users()
    assert reception not in on_pbx and owner in on_pbx  # the planner created no extension
    text = await _explain(sync_env, "user002@contoso.example", monkeypatch)
    assert "active on the PBX: no" in text and "shared mailbox" in text and "PBX: not created" in text
    assert "active on the PBX: yes" in await _explain(sync_env, "user001@contoso.example", monkeypatch)


async def test_shared_detection_counts_only_when_enabled(sync_env: SyncEnv) -> None:
    add_user(sync_env, 2, mailbox="shared", displayName="Reception")
    sync_env.configure(shared_mailbox={"enabled": True})
    await sync_env.run()
    copy = await sync_env.sync_store.find_user(sync_env.tenant.name, "user002@contoso.example")
    assert copy is not None and not (await decide_stored(sync_env.tenant, sync_env.sync_store, copy)).active
    sync_env.configure(shared_mailbox={"enabled": False})  # the planner would now create it: so does explain
    assert (await decide_stored(sync_env.tenant, sync_env.sync_store, copy)).active
    await sync_env.run()
    assert copy.id in await sync_env.pbx_users()
