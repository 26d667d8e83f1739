"""Property: for any sequence of Graph and settings changes, applying each
run's plan leaves the PBX as the final Graph state and settings say."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.pbx.mapping import flatten, user_payload
from daemon.pbx.schema import PBX_USER
from daemon.sync.plan import InventoryEntry, PlanInputs, plan_users
from daemon.sync.scope import decide, sso_flags
from state.sync_store import GraphCopy, SyncedRow
from sync_fixtures import tenant_config

USER_IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(8)]

graph_change = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("rename"), st.sampled_from(USER_IDS), st.sampled_from(["Ana", "Bo", "Zoë O'Neil", ""])),
    st.tuples(st.just("phone"), st.sampled_from(USER_IDS), st.sampled_from([None, "+1 555 0100 ext. 9"])),
    st.tuples(st.just("enabled"), st.sampled_from(USER_IDS), st.booleans()),
    st.tuples(st.just("guest"), st.sampled_from(USER_IDS), st.booleans()),
    st.tuples(st.just("soft_delete"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("restore"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("hard_delete"), st.sampled_from(USER_IDS)),
)
settings_change = st.tuples(
    st.just("settings"),
    st.sampled_from(["ALL", "INCLUDE", "EXCLUDE"]),
    st.lists(st.sampled_from(USER_IDS), max_size=3),
    st.booleans(),  # sync_guest_users
    st.booleans(),  # standard-user SSO
)
steps = st.lists(st.lists(st.one_of(graph_change, settings_change), min_size=1, max_size=4), min_size=1, max_size=6)


def patch(payload: dict[str, Any], operations: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Apply PATCH operations the way a SCIM server does, on our flat paths."""
    flat = flatten(payload)
    for op in operations:
        if op["op"] == "remove":
            flat.pop(op["path"], None)
        else:
            flat[op["path"]] = op["value"]
    return flat


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.graph: dict[str, dict[str, Any]] = {}
        self.removed: dict[str, str | None] = {}
        self.tenant = tenant_config(tmp, users={"max_deprovisions_per_run": 1000, "delete_after_days": 0})
        self.pbx: dict[str, dict[str, Any]] = {}  # externalId -> flat payload
        self.synced: dict[str, SyncedRow] = {}
        self.allocations: list[tuple[str, str, str, float | None]] = []
        self.first_number: dict[str, str] = {}

    def change(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        if kind == "settings":
            sync_type, selected, guests, standard = args
            self.tenant = tenant_config(
                self.tmp,
                users={"sync_type": sync_type, "selected_users": selected, "sync_guest_users": guests,
                       "max_deprovisions_per_run": 1000, "delete_after_days": 0},
                sign_in_as_standard_user={"enabled": standard},
            )
            return
        user = args[0]
        if self.removed.get(user) == "deleted":
            return  # a permanently deleted id never comes back
        if kind == "add" and user not in self.graph:
            self.graph[user] = {"id": user, "userPrincipalName": f"{user[-4:]}@contoso.example", "displayName": user[-4:],
                                "accountEnabled": True, "userType": "Member"}
            self.removed[user] = None
        elif user not in self.graph:
            return
        elif kind == "rename":
            self.graph[user]["displayName"] = args[1]
        elif kind == "phone":
            self.graph[user]["mobilePhone"] = args[1]
        elif kind == "enabled":
            self.graph[user]["accountEnabled"] = args[1]
        elif kind == "guest":
            self.graph[user]["userType"] = "Guest" if args[1] else "Member"
        elif kind == "soft_delete" and self.removed[user] is None:
            self.removed[user] = "changed"
        elif kind == "restore" and self.removed[user] == "changed":
            self.removed[user] = None
        elif kind == "hard_delete":
            self.removed[user] = "deleted"

    def run(self) -> int:
        """Plan and apply one run; returns the number of writes."""
        inventory = {u: InventoryEntry(f"pbx-{u}", p[f"{PBX_USER}:extensionNumber"]) for u, p in self.pbx.items()}
        inputs = PlanInputs(tenant=self.tenant, now=1000.0, pbx_numbers=frozenset(e.extension or "" for e in inventory.values()),
                            pbx_by_external_id=inventory, allocations=tuple(self.allocations), synced_count=len(self.synced))
        users = [(GraphCopy(u, copy.deepcopy(d), self.removed[u]), self.synced.get(u)) for u, d in sorted(self.graph.items())]
        plan = plan_users(inputs, users)
        assert not plan.held
        writes = plan.ordered_writes()
        for action in writes:
            if action.kind == "delete":
                del self.pbx[action.graph_id]
                self.synced.pop(action.graph_id, None)
                self.allocations = [(n, k, o, 999.0 if o == action.graph_id else r) for n, k, o, r in self.allocations]
                if self.removed.get(action.graph_id) == "deleted":
                    del self.graph[action.graph_id]
                continue
            assert action.payload is not None
            if action.kind == "create":
                self.pbx[action.graph_id] = flatten(action.payload)
                self.allocations.append((action.extension or "", "user", action.graph_id, None))
                self.first_number.setdefault(action.graph_id, action.extension or "")
            else:
                self.pbx[action.graph_id] = patch(self.pbx_payload(action.graph_id), action.operations)
                assert self.pbx[action.graph_id] == flatten(action.payload)  # the PATCH produced the desired object
            self.synced[action.graph_id] = SyncedRow(action.graph_id, f"pbx-{action.graph_id}", action.payload, None, None,
                                                     action.active, action.out_of_scope_since, None, None, 0, None, None)
        return len(writes)

    def pbx_payload(self, user: str) -> dict[str, Any]:
        row = self.synced[user]
        assert row.payload is not None
        return row.payload

    def check(self) -> None:
        numbers = [p[f"{PBX_USER}:extensionNumber"] for p in self.pbx.values()]
        assert len(numbers) == len(set(numbers))
        for user, flat in self.pbx.items():
            assert self.removed.get(user) != "deleted"
            assert flat[f"{PBX_USER}:extensionNumber"] == self.first_number[user]  # numbers never change
        for user, data in self.graph.items():
            decision = decide(data, self.removed[user], self.tenant, set())
            if decision.active:
                assert user in self.pbx
            if user not in self.pbx:
                continue
            admin, standard = sso_flags(data, self.tenant)
            expected = user_payload(data, extension_number=self.first_number[user], active=decision.active,
                                    sign_in_as_administrator=admin, sign_in_as_standard_user=standard)
            assert self.pbx[user] == flatten(expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_applying_plans_converges_to_the_final_state(tmp_path: Path, runs: list[list[tuple[Any, ...]]]) -> None:
    world = World(tmp_path)
    for changes in runs:
        for step in changes:
            world.change(step)
        world.run()
    world.check()
    assert world.run() == 0  # a run without changes writes nothing
