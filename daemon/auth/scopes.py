"""The least Graph permissions the enabled features need (delegated mode)."""

from __future__ import annotations

from daemon.config import TenantConfig
from daemon.graph.clouds import graph_base_url, graph_scope


def delegated_scopes(tenant: TenantConfig) -> list[str]:
    """Fully qualified scopes on the tenant's Graph host; MSAL adds openid,
    profile and offline_access itself."""
    names: list[str] = []
    if tenant.users.enabled or tenant.sign_in_as_administrator.enabled or tenant.sign_in_as_standard_user.enabled:
        names.append("User.Read.All")
    if tenant.personal_contacts.enabled:
        names += ["Contacts.Read", "Contacts.Read.Shared"]
    if tenant.events.enabled:
        names += ["Calendars.Read", "Calendars.Read.Shared"]
    if tenant.shared_mailbox.enabled:
        names += ["MailboxSettings.Read", "Contacts.Read.Shared"]
    if tenant.groups:
        names.append("Group.Read.All")
    if not names:
        names.append("User.Read")  # enough to sign in and name the owner
    base = graph_base_url(tenant)
    return [f"{base}/{name}" for name in dict.fromkeys(names)]


def application_scopes(tenant: TenantConfig) -> list[str]:
    return [graph_scope(tenant)]
