"""One fake tenant with every kind of object the engine writes: users, Entra
groups that become PBX groups, and personal contacts; plus the mutations of a
working day (creates, updates and deletes of each kind) and what the PBX must
hold afterwards. Shared by the crash, lost-answer and state-loss tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.store import SimTenant

SALES = "11111111-0000-4000-8000-00000000000a"
SUPPORT = "11111111-0000-4000-8000-00000000000b"
LEGAL = "11111111-0000-4000-8000-00000000000c"


def user_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def hire_id(index: int) -> str:
    return f"00000000-0000-4000-9000-{index:012d}"


def config_sections(groups: tuple[str, ...] = (SALES, SUPPORT, LEGAL)) -> dict[str, Any]:
    """The tenant settings that turn every kind on (users from 1001, groups from 2000)."""
    return {"groups": list(groups), "groups_starting_extension_number": "2000",
            "personal_contacts": {"enabled": True}}


def config_toml() -> tuple[str, str]:
    """The same settings for the live daemon: lines of the ``[[tenants]]`` table, and its sub-tables."""
    return (f'groups = ["{SALES}", "{SUPPORT}", "{LEGAL}"]\ngroups_starting_extension_number = "2000"\n',
            "\n[tenants.personal_contacts]\nenabled = true\n")


@dataclass
class Scenario:
    tenant: SimTenant
    users: list[str] = field(default_factory=list)
    contacts: dict[str, str] = field(default_factory=dict)  # contact id -> owner
    members: dict[str, set[str]] = field(default_factory=dict)  # group -> user ids

    def expected_users(self) -> set[str]:
        return set(self.users)

    def expected_groups(self) -> dict[str, set[str]]:
        return {g: set(m) for g, m in self.members.items()}

    def expected_contacts(self) -> set[str]:
        return {c for c, owner in self.contacts.items() if owner in self.users}

    def writes_of_initial_run(self) -> int:
        """One create per user, group and contact (one by one, without /Bulk)."""
        return len(self.users) + len(self.members) + len(self.contacts)


def build(tenant: SimTenant, users: int = 20, contacts_per_user: int = 2, contact_owners: int = 5) -> Scenario:
    scenario = Scenario(tenant)
    for index in range(1, users + 1):
        uid = user_id(index)
        tenant.add_user(uid, displayName=f"User {index}", userPrincipalName=f"user{index:03d}@contoso.example",
                        mail=f"user{index:03d}@contoso.example", accountEnabled=True, userType="Member")
        scenario.users.append(uid)
    for index in range(1, contact_owners + 1):
        for number in range(contacts_per_user):
            contact = f"c-{index:03d}-{number}"
            tenant.put_contact(user_id(index), contact, displayName=f"Contact {index}.{number}",
                               mobilePhone=f"+1 555 01{index:02d}{number}")
            scenario.contacts[contact] = user_id(index)
    for group, picked in ((SALES, scenario.users[0:6]), (SUPPORT, scenario.users[4:10]), (LEGAL, scenario.users[10:12])):
        tenant.add_group(group, members=list(picked), displayName=f"Group {group[-1]}",
                         mail=f"group-{group[-1]}@contoso.example")
        scenario.members[group] = set(picked)
    return scenario


def working_day(scenario: Scenario, n: int = 3) -> int:
    """Creates, updates and deletes of every kind; returns the PBX writes it needs
    one by one: n hires, n renames, n leavers, a group rename, a membership
    change, a deleted group, n new contacts, n changed and n deleted."""
    tenant = scenario.tenant
    for index in range(n):
        uid = hire_id(index)
        tenant.add_user(uid, displayName=f"New Hire {index}", userPrincipalName=f"hire{index}@contoso.example",
                        accountEnabled=True, userType="Member")
        scenario.users.append(uid)
    for uid in scenario.users[12 : 12 + n]:
        tenant.change_user(uid, displayName=f"Renamed {uid[-4:]}")
    leavers = scenario.users[12 + n : 12 + 2 * n]
    for uid in leavers:
        tenant.hard_delete_user(uid)
    scenario.users = [u for u in scenario.users if u not in leavers]
    tenant.change_group(SALES, displayName="Sales and Marketing")
    tenant.add_member(SUPPORT, scenario.users[11])
    scenario.members[SUPPORT].add(scenario.users[11])
    tenant.delete_group(LEGAL)
    del scenario.members[LEGAL]
    owner = user_id(1)
    for number in range(n):
        contact = f"c-new-{number}"
        tenant.put_contact(owner, contact, displayName=f"New contact {number}", mobilePhone="+1 555 0199")
        scenario.contacts[contact] = owner
    others = sorted(c for c, o in scenario.contacts.items() if o != owner and o in scenario.users)
    for contact in others[:n]:
        tenant.put_contact(scenario.contacts[contact], contact, displayName=f"Changed {contact}", mobilePhone="+1 555 0177")
    for contact in others[n : 2 * n]:
        tenant.delete_contact(scenario.contacts[contact], contact)
        del scenario.contacts[contact]
    assert len(others) >= 2 * n and not set(leavers) & set().union(*scenario.members.values())
    return 6 * n + 3
