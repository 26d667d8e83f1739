"""Which users are synced, and why: the scope rules of the PBX page, pure."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.config import TenantConfig


@dataclass(frozen=True)
class ScopeDecision:
    in_scope: bool
    enabled: bool  # the Entra account is enabled (and not deleted)
    rule: str  # the rule that decided, for explain and logs

    @property
    def active(self) -> bool:
        """Whether the extension should be active on the PBX."""
        return self.in_scope and self.enabled


def matches(user: Mapping[str, Any], references: Sequence[str]) -> str | None:
    """The selected_users entry naming this user: object IDs exactly, UPNs case-insensitively."""
    user_id = str(user.get("id", ""))
    upn = str(user.get("userPrincipalName") or "").lower()
    for reference in references:
        if _is_uuid(reference):
            if reference.lower() == user_id.lower():
                return reference
        elif upn and reference.lower() == upn:
            return reference
    return None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def decide(
    user: Mapping[str, Any],
    removed: str | None,
    tenant: TenantConfig,
    group_members: set[str] | frozenset[str],
    shared_mailboxes: set[str] | frozenset[str] = frozenset(),
) -> ScopeDecision:
    """The scope of one user from their stored Graph copy and the settings."""
    settings = tenant.users
    enabled = user.get("accountEnabled") is not False and removed is None
    if removed == "deleted":
        return ScopeDecision(False, False, "permanently deleted in Entra ID")
    if removed == "changed":
        return ScopeDecision(False, False, "deleted in Entra ID (restorable for 30 days)")
    if str(user.get("id")) in shared_mailboxes:
        return ScopeDecision(False, enabled, "shared mailbox (shared mailboxes never get extensions)")
    if user.get("userType") == "Guest" and not settings.sync_guest_users:
        return ScopeDecision(False, enabled, "guest account and users.sync_guest_users = false")
    selected = matches(user, settings.selected_users)
    if settings.sync_type == "INCLUDE":
        if selected:
            decision = ScopeDecision(True, enabled, f"INCLUDE: listed in selected_users ({selected})")
        elif str(user.get("id")) in group_members:
            decision = ScopeDecision(True, enabled, "INCLUDE: member of a configured group")
        else:
            return ScopeDecision(False, enabled, "INCLUDE: neither in selected_users nor in a configured group")
    elif settings.sync_type == "EXCLUDE":
        if selected:
            return ScopeDecision(False, enabled, f"EXCLUDE: listed in selected_users ({selected})")
        decision = ScopeDecision(True, enabled, "EXCLUDE: not listed in selected_users")
    else:
        decision = ScopeDecision(True, enabled, "ALL: every user")
    if not enabled:  # the reason first: what an operator reads as "why is this user not active?"
        return ScopeDecision(True, False, f"account disabled in Entra ID (in scope by {decision.rule})")
    return decision


def sso_flags(user: Mapping[str, Any], tenant: TenantConfig) -> tuple[bool, bool]:
    """(signInAsAdministrator, signInAsStandardUser) from the two sign-in sections."""
    admin_section = tenant.sign_in_as_administrator
    admin = admin_section.enabled and matches(user, admin_section.selected_users) is not None
    standard_section = tenant.sign_in_as_standard_user
    if not standard_section.enabled:
        standard = False
    elif standard_section.sync_type == "INCLUDE":
        standard = matches(user, standard_section.selected_users) is not None
    elif standard_section.sync_type == "EXCLUDE":
        standard = matches(user, standard_section.selected_users) is None
    else:
        standard = True
    return admin, standard
