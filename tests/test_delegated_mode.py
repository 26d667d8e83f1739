"""Delegated mode as Graph really answers it: every mailbox's settings but the
signed-in user's own are 403, so shared-mailbox detection is blind there.
The run, ``status`` (text, JSON, page) and ``explain`` say so, with the fix."""

from __future__ import annotations

from daemon import status
from daemon.status_page import DaemonInfo, render
from daemon.sync.read_mailboxes import SHARED_DETECTION_FIX, shared_detection_note
from sync_fixtures import OneTenantConfig, SyncEnv, on_both_backends  # noqa: F401  (the fixture: every test here runs on both backends)
from test_contact_sync import add_user


async def test_a_delegated_tenant_is_told_detection_needs_application_mode_or_a_list(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    reception = add_user(sync_env, 2, mailbox="shared", displayName="Reception")
    sync_env.graph.sim.api.settings.signed_in_user = owner  # delegated: the admin who authorized
    sync_env.configure(shared_mailbox={"enabled": True})
    report = await sync_env.run()
    assert report.contacts.settings_unreadable == ["user002@contoso.example"]
    assert reception in await sync_env.pbx_users()  # not known to be shared: synced as a user, and said so

    (tenant_report,) = await status.collect(OneTenantConfig(sync_env.tenant, sync_env.tmp_path / "m365sync.toml"), sync_env.store, sync_env.sync_store)  # type: ignore[arg-type]
    assert tenant_report.unreadable_mailbox_settings == ["user002@contoso.example"]
    text = status.as_text([tenant_report])
    assert "mailbox settings not readable (403): 1 mailbox(es)" in text and 'auth_mode = "application"' in text
    assert status.as_json([tenant_report])["tenants"][0]["shared_detection_fix"] == SHARED_DETECTION_FIX
    assert "shared_mailbox.mailboxes" in render([tenant_report], DaemonInfo("1", "here", 0), 60)
    note = await shared_detection_note(sync_env.tenant, sync_env.sync_store, reception)
    assert note is not None and "not readable (403)" in note and "application" in note
    assert await shared_detection_note(sync_env.tenant, sync_env.sync_store, owner) is None  # its own settings read


async def test_listing_the_shared_mailbox_is_the_delegated_fix(sync_env: SyncEnv) -> None:
    owner = add_user(sync_env, 1)
    reception = add_user(sync_env, 2, mailbox="shared", displayName="Reception")
    sync_env.graph.sim.api.settings.signed_in_user = owner
    sync_env.configure(shared_mailbox={"enabled": True, "mailboxes": ["user002@contoso.example"]})
    await sync_env.run()
    assert reception not in await sync_env.pbx_users() and owner in await sync_env.pbx_users()


async def test_application_mode_detects_shared_mailboxes_and_reports_nothing(sync_env: SyncEnv) -> None:
    add_user(sync_env, 1)
    reception = add_user(sync_env, 2, mailbox="shared", displayName="Reception")
    sync_env.configure(shared_mailbox={"enabled": True})  # no signed-in user: every mailbox is readable
    report = await sync_env.run()
    assert report.contacts.settings_unreadable == [] and reception not in await sync_env.pbx_users()
