"""Property: for any sequence of Graph and settings changes, applying each
run's plan (users, groups and contacts, in the applier's phase order) leaves
the PBX as the final Graph state and settings say, and a run after that
writes nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.pbx.mapping import contact_payload, flatten, has_phone_number, payload_hash, user_payload
from daemon.pbx.schema import PBX_GROUP, PBX_USER
from daemon.sync.changes import Change, Plan
from daemon.sync.materialize import build_deferred, resolve_users
from daemon.sync.plan_contacts import ContactPlanner, Mailbox
from daemon.sync.plan_groups import plan_groups
from daemon.sync.plan_users import PlanInputs, UserPlanner
from daemon.sync.scope import decide, sso_flags
from daemon.sync.snapshot import Inventory, InventoryEntry, Snapshot
from state.pushed import Pushed, Removed
from state.sync_store import GraphCopy, SyncedRow
from sync_fixtures import tenant_config

USER_IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(8)]
GROUP_IDS = ["11111111-0000-4000-8000-00000000000a", "11111111-0000-4000-8000-00000000000b"]
CONTACT_IDS = [f"c-{i}" for i in range(3)]

graph_change = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("rename"), st.sampled_from(USER_IDS), st.sampled_from(["Ana", "Bo", "Zoë O'Neil", ""])),
    st.tuples(st.just("phone"), st.sampled_from(USER_IDS), st.sampled_from([None, "+1 555 0100 ext. 9"])),
    st.tuples(st.just("enabled"), st.sampled_from(USER_IDS), st.booleans()),
    st.tuples(st.just("guest"), st.sampled_from(USER_IDS), st.booleans()),
    st.tuples(st.just("soft_delete"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("restore"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("hard_delete"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("member"), st.sampled_from(GROUP_IDS), st.sampled_from(USER_IDS), st.booleans()),
    st.tuples(st.just("group_name"), st.sampled_from(GROUP_IDS), st.sampled_from(["Sales", "Support", "Ops"])),
    st.tuples(st.just("contact"), st.sampled_from(CONTACT_IDS), st.sampled_from(USER_IDS),
              st.sampled_from([None, "+1 555 0199"]), st.sampled_from(["Kim", "Lee"])),
    st.tuples(st.just("contact_delete"), st.sampled_from(CONTACT_IDS)),
)
settings_change = st.tuples(
    st.just("settings"),
    st.sampled_from(["ALL", "INCLUDE", "EXCLUDE"]),
    st.lists(st.sampled_from(USER_IDS), max_size=3),
    st.booleans(),  # sync_guest_users
    st.booleans(),  # standard-user SSO
)
steps = st.lists(st.lists(st.one_of(graph_change, settings_change), min_size=1, max_size=4), min_size=1, max_size=6)


def patch(flat: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Apply PATCH operations the way a SCIM server does, on our flat paths (and group members)."""
    flat = dict(flat)
    for op in operations:
        path = str(op["path"])
        if path == "members" and op["op"] == "add":
            flat["members"] = sorted({*(m for m in flat.get("members", [])), *(v["value"] for v in op["value"])})
        elif path.startswith("members[value eq "):
            member = path.removeprefix('members[value eq "').removesuffix('"]')
            flat["members"] = [m for m in flat.get("members", []) if m != member]
            if not flat["members"]:
                del flat["members"]  # SCIM: an empty multi-valued attribute is unassigned
        elif op["op"] == "remove":
            flat.pop(path, None)
        else:
            flat[path] = op["value"]
    return flat


def stored(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload as the model PBX keeps it: flat, members as a sorted list of ids."""
    flat = flatten({k: v for k, v in payload.items() if k != "members"})
    if payload.get("members"):
        flat["members"] = sorted(m["value"] for m in payload["members"])
    return flat


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.graph: dict[str, dict[str, Any]] = {}
        self.removed: dict[str, str | None] = {}
        self.groups = {g: {"id": g, "displayName": f"Group {g[-1]}"} for g in GROUP_IDS}
        self.members: dict[str, set[str]] = {g: set() for g in GROUP_IDS}
        self.contacts: dict[str, dict[str, Any]] = {}  # live contacts, with _owner
        self.gone_contacts: set[str] = set()
        self.settings: dict[str, Any] = {"users": {"max_deprovisions_per_run": 1000, "delete_after_days": 0}}
        self.pbx: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, externalId) -> stored payload
        self.synced: dict[tuple[str, str], SyncedRow] = {}
        self.allocations: list[tuple[str, str, str, float | None]] = []
        self.first_number: dict[str, str] = {}

    @property
    def tenant(self) -> Any:
        return tenant_config(self.tmp, groups=GROUP_IDS, groups_starting_extension_number="2000",
                             personal_contacts={"enabled": True}, **copy.deepcopy(self.settings))

    def change(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        if kind == "settings":
            sync_type, selected, guests, standard = args
            self.settings = {"users": {"sync_type": sync_type, "selected_users": selected, "sync_guest_users": guests,
                                       "max_deprovisions_per_run": 1000, "delete_after_days": 0},
                             "sign_in_as_standard_user": {"enabled": standard}}
        elif kind == "member":
            group, user, add = args
            if add:
                self.user_change("add", [user])  # a new hire is added to a group at once, often
            if add and user in self.graph and self.removed[user] != "deleted":
                self.members[group].add(user)
            else:
                self.members[group].discard(user)
        elif kind == "group_name":
            self.groups[args[0]]["displayName"] = args[1]
        elif kind == "contact":
            contact, owner, phone, name = args
            self.user_change("add", [owner])
            if contact not in self.gone_contacts:
                self.contacts[contact] = {"id": contact, "displayName": name, "mobilePhone": phone, "_owner": owner}
        elif kind == "contact_delete" and contact_alive(self, args[0]):
            del self.contacts[args[0]]
            self.gone_contacts.add(args[0])
        else:
            self.user_change(kind, args)

    def user_change(self, kind: str, args: list[Any]) -> None:
        user = args[0]
        if self.removed.get(user) == "deleted":
            return  # a permanently deleted id never comes back
        if kind == "add" and user not in self.graph:
            self.graph[user] = {"id": user, "userPrincipalName": f"{user[-4:]}@contoso.example", "displayName": user[-4:],
                                "accountEnabled": True, "userType": "Member"}
            self.removed[user] = None
        elif user not in self.graph:
            return
        elif kind in ("rename", "phone", "enabled", "guest"):
            field = {"rename": "displayName", "phone": "mobilePhone", "enabled": "accountEnabled", "guest": "userType"}[kind]
            value = ("Guest" if args[1] else "Member") if kind == "guest" else args[1]
            self.graph[user][field] = value
        elif kind == "soft_delete" and self.removed[user] is None:
            self.removed[user] = "changed"
        elif kind == "restore" and self.removed[user] == "changed":
            self.removed[user] = None
        elif kind == "hard_delete":
            self.removed[user] = "deleted"
            for members in self.members.values():
                members.discard(user)

    # --- one run: plan every kind, apply in phase order ---

    def plan(self) -> Plan:
        tenant = self.tenant
        in_scope = frozenset().union(*self.members.values())
        numbers = {p.get(f"{PBX_USER}:extensionNumber") or p.get(f"{PBX_GROUP}:extensionNumber")
                   for p in self.pbx.values()} - {None}
        inventory = Inventory(numbers=set(numbers))  # type: ignore[arg-type]
        inputs = PlanInputs(tenant=tenant, now=1000.0, group_members=in_scope, pbx_numbers=frozenset(numbers),  # type: ignore[arg-type]
                            pbx_by_external_id={u: InventoryEntry(f"pbx-{u}", None) for (k, u) in self.pbx if k == "user"},
                            allocations=tuple(self.allocations))
        users = UserPlanner(inputs)
        # With the stored text, as the state gives it: unchanged inputs skip building the payload.
        copies = {user: GraphCopy(user, copy.deepcopy(data), self.removed[user], json.dumps(data, sort_keys=True))
                  for user, data in self.graph.items()}
        for user in sorted(copies):
            users.add(copies[user], self.synced.get(("user", user)))
        plan = users.finish()
        assert all(c.operation.payload is None and c.refs.payload_source is not None
                   for c in plan.changes if c.action == "create" and c.kind == "user")
        plan.changes = build_deferred(plan.changes, copies)  # as the applier does per chunk
        mailboxes = {u: Mailbox(u, upn, "personal", pbx) for u, (upn, pbx) in users.active.items()}
        contacts = ContactPlanner(tenant, mailboxes, frozenset(), {})
        for contact in sorted(set(self.contacts) | {g for (k, g) in self.synced if k == "contact"}):
            data = self.contacts.get(contact)
            contacts.add(GraphCopy(contact, dict(data), None) if data else None, self.synced.get(("contact", contact)))
        plan.extend(contacts.finish())
        snapshot = Snapshot(tenant, 1000.0, inventory, tuple(self.allocations),
                            {g: frozenset(m) for g, m in self.members.items()}, {}, {}, {}, {}, {})
        synced_groups = {g: row for (k, g), row in self.synced.items() if k == "group"}
        user_ids = {u: row.pbx_id for (k, u), row in self.synced.items() if k == "user" and row.pbx_id}
        created = {c.graph_id for c in plan.changes if c.kind == "user" and c.action == "create"}
        leaving = {c.graph_id for c in plan.changes if c.kind == "user" and c.action == "delete"}
        copies = {g: GraphCopy(g, dict(d), None) for g, d in self.groups.items()}
        plan.extend(plan_groups(snapshot, copies, synced_groups, user_ids, created, leaving, users.pool))
        return plan

    def run(self) -> int:
        """Plan and apply one run; returns the number of writes."""
        plan = self.plan()
        assert not plan.held
        for change in plan.ordered():
            self.apply(change)
        return len(plan.changes)

    def apply(self, change: Change) -> None:
        ids = {u: row.pbx_id for (k, u), row in self.synced.items() if k == "user" and row.pbx_id}
        resolved = resolve_users(change, ids)  # as the applier does per chunk
        assert resolved is not None and not resolved.refs.pending_users
        change = resolved
        operation, key = change.operation, (change.kind, change.graph_id)
        payload = operation.payload
        if operation.action == "delete":
            del self.pbx[key]
        elif operation.action == "create" or operation.maybe_applied:
            assert payload is not None
            self.pbx[key] = stored(payload)
        else:
            self.pbx[key] = patch(self.pbx[key], list(operation.operations))
            assert payload is not None and self.pbx[key] == stored(payload)  # the PATCH made the desired object
        entry = change.on_success
        if isinstance(entry, Removed):
            self.synced.pop(key, None)
            self.allocations = [(n, k, o, 999.0 if (k, o) == key else r) for n, k, o, r in self.allocations]
            if entry.purge_copy and change.kind == "user":
                del self.graph[change.graph_id]
            return
        assert isinstance(entry, Pushed) and payload is not None
        if entry.extension and not any(n == entry.extension and r is None for n, _, _, r in self.allocations):
            self.allocations.append((entry.extension, change.kind, change.graph_id, None))
            self.first_number.setdefault(change.graph_id, entry.extension)
        self.synced[key] = SyncedRow(change.graph_id, f"pbx-{change.graph_id}", payload, payload_hash(payload), None, entry.active,
                                     entry.out_of_scope_since, None, None, 0, None, None, entry.input_hash)

    def check(self) -> None:
        tenant = self.tenant
        numbers = [p.get(f"{PBX_USER}:extensionNumber") or p.get(f"{PBX_GROUP}:extensionNumber")
                   for (k, _), p in self.pbx.items() if k in ("user", "group")]
        assert len(numbers) == len(set(numbers))  # one pool for users and groups
        in_scope = set().union(*self.members.values())
        active = set()
        for user, data in self.graph.items():
            decision = decide(data, self.removed[user], tenant, in_scope)
            if decision.active:
                assert ("user", user) in self.pbx
                active.add(user)
            if ("user", user) not in self.pbx:
                continue
            admin, standard = sso_flags(data, tenant)
            expected = user_payload(data, extension_number=self.first_number[user], active=decision.active,
                                    sign_in_as_administrator=admin, sign_in_as_standard_user=standard)
            assert self.pbx[("user", user)] == stored(expected)  # numbers never change
        for group, data in self.groups.items():
            on_pbx = {u for (k, u) in self.pbx if k == "user"}
            expected_members = sorted(f"pbx-{u}" for u in self.members[group] if u in on_pbx)
            assert self.pbx[("group", group)]["members"] == expected_members if expected_members else \
                self.pbx[("group", group)].get("members", []) == []
            assert self.pbx[("group", group)]["displayName"] == data["displayName"]
            assert self.pbx[("group", group)][f"{PBX_GROUP}:extensionNumber"] == self.first_number[group]
        wanted = {c for c, d in self.contacts.items() if d["_owner"] in active and has_phone_number(d)}
        assert {c for (k, c) in self.pbx if k == "contact"} == wanted
        for contact in wanted:
            data = self.contacts[contact]
            owner = data["_owner"]
            expected = contact_payload(data, directory="personal", source=self.graph[owner]["userPrincipalName"],
                                       owner=f"pbx-{owner}")
            assert self.pbx[("contact", contact)] == stored(expected)


def contact_alive(world: World, contact: str) -> bool:
    return contact in world.contacts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_applying_plans_converges_to_the_final_state(tmp_path: Path, runs: list[list[tuple[Any, ...]]]) -> None:
    world = World(tmp_path)
    for changes in runs:
        for step in changes:
            world.change(step)
        world.run()
    world.check()
    assert world.run() == 0  # a run without changes writes nothing
