"""The least Graph permissions the enabled features need (delegated mode)."""

from __future__ import annotations

from daemon.config import TenantConfig
from daemon.graph.clouds import graph_base_url, graph_scope


def delegated_scopes(tenant: TenantConfig) -> list[str]:
    """Fully qualified scopes on the tenant's Graph host; MSAL adds openid,
    profile and offline_access itself."""
    # Every run reads the users delta (scope, mailboxes, group members), whatever is enabled.
    names: list[str] = ["User.Read.All"]
    if tenant.personal_contacts.enabled:
        names += ["Contacts.Read", "Contacts.Read.Shared"]
    if tenant.events.enabled:
        names += ["Calendars.Read", "Calendars.Read.Shared"]
    if tenant.shared_mailbox.enabled:
        names += ["MailboxSettings.Read", "Contacts.Read.Shared"]
    if tenant.groups:
        names.append("Group.Read.All")
    if tenant.presence.enabled:  # added only when enabled: an owner authorized before consents again
        names.append("Presence.Read.All")
    base = graph_base_url(tenant)
    return [f"{base}/{name}" for name in dict.fromkeys(names)]


def application_scopes(tenant: TenantConfig) -> list[str]:
    return [graph_scope(tenant)]
