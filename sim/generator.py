"""A seeded, deterministic tenant: the awkward cases of a real directory.

Members and guests, disabled accounts, shared mailboxes and rooms (told apart
only by ``mailboxSettings.userPurpose``, like in Exchange), groups, contacts
and events, photos for some users, names with accents, apostrophes and
non-Latin scripts, and optional fields left empty.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from sim.store import DEFAULT_CONTACT_FOLDER, SimTenant

DOMAIN = "contoso.example"
GIVEN_NAMES = [
    "Adele", "Alex", "Bianca", "Chloé", "Dmitri", "Émile", "Fatima", "Grady", "Hiroshi", "Ingrid",
    "José", "Kwame", "Léa", "Megan", "Nestor", "Olga", "Patti", "Ren", "Søren", "Zoë",
    "Анна", "Иван", "美咲", "太郎", "محمد", "ليلى", "Σοφία", "Dũng",
]
SURNAMES = [
    "Vance", "Wilber", "O'Brien", "D'Angelo", "Müller", "García", "Nowak", "Ngũgĩ", "Smith",
    "Lynch", "Tanaka", "Ørsted", "Łukasiewicz", "Иванова", "山田", "حداد", "Παπαδόπουλος",
    "van der Berg", "Nguyễn", "Chen",
]
DEPARTMENTS = ["Sales", "Support", "Engineering", "Finance", "Operations", None]
JOB_TITLES = ["Account Manager", "Engineer", "Director", "Support Agent", None]
TIME_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland", "Asia/Tokyo"]
SHOW_AS = ["busy", "busy", "tentative", "free", "oof", "workingElsewhere"]


@dataclass
class GeneratedTenant:
    members: list[str] = field(default_factory=list)
    guests: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    shared_mailboxes: list[str] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    with_photo: list[str] = field(default_factory=list)

    @property
    def all_users(self) -> list[str]:
        return self.members + self.guests + self.disabled + self.shared_mailboxes + self.rooms


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate_tenant(
    tenant: SimTenant,
    users: int = 200,
    seed: int = 1,
    contacts_per_user: int = 0,
    events_per_user: int = 0,
    groups: int = 3,
    photo_fraction: float = 0.3,
    photo_bytes: int = 64,
) -> GeneratedTenant:
    """Fill ``tenant`` with ``users`` directory users and their mailboxes."""
    rng = random.Random(seed)
    made = GeneratedTenant()
    for index in range(users):
        id_ = _uuid(rng)
        given, surname = rng.choice(GIVEN_NAMES), rng.choice(SURNAMES)
        nick = f"user{index:05d}"
        roll = rng.random()
        properties: dict[str, object] = {
            "displayName": f"{given} {surname}",
            "givenName": given,
            "surname": surname,
            "userPrincipalName": f"{nick}@{DOMAIN}",
            "mail": f"{nick}@{DOMAIN}",
            "accountEnabled": True,
            "userType": "Member",
            "businessPhones": [f"+1 425 555 {index % 10000:04d}"] if rng.random() < 0.8 else [],
            "mobilePhone": f"+44 7700 9{index % 100000:05d}" if rng.random() < 0.5 else None,
            "jobTitle": rng.choice(JOB_TITLES),
            "department": rng.choice(DEPARTMENTS),
            "officeLocation": "Building 1" if rng.random() < 0.3 else None,
            "preferredLanguage": "en-US",
        }
        mailbox: str | None = "user"
        if roll < 0.08:
            guest_mail = f"{nick}@fabrikam.example"
            properties.update(
                userType="Guest",
                userPrincipalName=f"{nick}_fabrikam.example#EXT#@{DOMAIN}",
                mail=guest_mail,
                businessPhones=[],
            )
            mailbox = None
            made.guests.append(id_)
        elif roll < 0.13:
            properties["accountEnabled"] = False
            made.disabled.append(id_)
        elif roll < 0.16:
            properties.update(displayName=f"Shared {surname}", givenName=None, surname=None, accountEnabled=False)
            mailbox = "shared"
            made.shared_mailboxes.append(id_)
        elif roll < 0.18:
            properties.update(displayName=f"Room {index}", givenName=None, surname=None, accountEnabled=False)
            mailbox = "room"
            made.rooms.append(id_)
        else:
            made.members.append(id_)
        tenant.add_user(id_, mailbox=mailbox, **{k: v for k, v in properties.items() if v is not None})
        if mailbox is not None and rng.random() < photo_fraction:
            tenant.set_photo(id_, b"\xff\xd8\xff\xe0" + rng.randbytes(photo_bytes) + b"\xff\xd9")
            made.with_photo.append(id_)
        if mailbox in ("user", "shared"):
            _contacts(tenant, rng, id_, contacts_per_user)
        if mailbox == "user":
            _events(tenant, rng, id_, events_per_user)
    for index in range(groups):
        group_id = _uuid(rng)
        size = min(len(made.members), rng.randint(2, 40))
        members = sorted(rng.sample(made.members, size)) if size else []
        tenant.add_group(
            group_id,
            members=members,
            displayName=f"Team {index} – {rng.choice(DEPARTMENTS) or 'General'}",
            mail=f"team{index}@{DOMAIN}",
            mailEnabled=True,
            securityEnabled=False,
            groupTypes=["Unified"],
        )
        made.groups.append(group_id)
    return made


def _contacts(tenant: SimTenant, rng: random.Random, user_id: str, count: int) -> None:
    for index in range(count):
        given, surname = rng.choice(GIVEN_NAMES), rng.choice(SURNAMES)
        phones_roll = rng.random()
        properties: dict[str, object] = {
            "displayName": f"{given} {surname}",
            "givenName": given,
            "surname": surname,
            "companyName": rng.choice(["Fabrikam", "Northwind Traders", "Tailspin Toys", None]),
            "jobTitle": rng.choice(JOB_TITLES),
            "emailAddresses": [{"name": f"{given} {surname}", "address": f"contact{index}@fabrikam.example"}],
            "businessPhones": [f"+1 206 555 {index % 10000:04d} ext. {index % 90 + 10}"] if phones_roll < 0.6 else [],
            "homePhones": [f"+1 206 555 {(index + 7) % 10000:04d}"] if phones_roll < 0.2 else [],
            "mobilePhone": f"+1 206 555 {(index + 3) % 10000:04d}" if 0.4 < phones_roll < 0.9 else None,
        }
        tenant.put_contact(
            user_id,
            _uuid(rng),
            folder_id=DEFAULT_CONTACT_FOLDER,
            **{k: v for k, v in properties.items() if v is not None},
        )


def _events(tenant: SimTenant, rng: random.Random, user_id: str, count: int) -> None:
    now = tenant.clock.now()
    for _ in range(count):
        zone = rng.choice(TIME_ZONES)
        start = (now + timedelta(hours=rng.randint(-24, 24 * 13))).replace(minute=0, second=0, microsecond=0)
        length = timedelta(minutes=rng.choice([30, 60, 90]))
        local = start.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        tenant.put_event(
            user_id,
            _uuid(rng),
            subject=f"Private meeting {rng.randint(1, 999)}",
            body={"contentType": "text", "content": "Confidential agenda"},
            start={"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone},
            end={"dateTime": (local + length).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone},
            showAs=rng.choice(SHOW_AS),
            isCancelled=rng.random() < 0.05,
            isAllDay=False,
            type="singleInstance",
            sensitivity=rng.choice(["normal", "private"]),
        )

