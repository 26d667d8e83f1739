"""Every statement a real run sends to the state database, through
``EXPLAIN QUERY PLAN``: none may scan a table that grows with the tenant,
and a statement run once per object must find its rows by more than the
tenant and kind (an id, an owner), or a run's cost grows with the square of
the tenant."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from datetime import timedelta

import scenario
from daemon.sync.calendar import CalendarSync
from daemon.sync.report import RunReport
from state.copies import LIVE_USER_BY_UPN, MAILBOXES_OF_PURPOSE
from state.due import CLEAR_DIRTY, DIRTY_IDS, FAILED_OBJECTS, OUT_OF_SCOPE_BEFORE, PHOTO_CHECKS_DUE
from state.history import PRUNE_HISTORY
from state.notify_store import KEEPER_ROUND, SUBSCRIPTION_BY_ID
from sync_fixtures import SyncEnv

GROWING = ("graph_objects", "synced_objects", "group_members", "extension_allocations", "pending_creates",
           "contact_folders", "unreadable_mailboxes", "calendar_state", "held_deprovisions", "delta_links", "runs",
           "object_history")
PER_OBJECT = 20  # a statement run this often in one run (of 60 users) is run per object
_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|X'[0-9A-Fa-f]*'")


def template(sql: str) -> str:
    """The statement with its values taken out (the trace shows them bound)."""
    return re.sub(r"\s+", " ", _LITERAL.sub("?", sql)).strip()


async def traced_run(env: SyncEnv) -> tuple[Counter[str], dict[str, str]]:
    """Statements of one sync run and one calendar poll: how often each ran, and one bound example."""
    seen: Counter[str] = Counter()
    example: dict[str, str] = {}

    def trace(sql: str) -> None:
        if sql.lstrip().upper().startswith("BEGIN"):
            seen["BEGIN"] += 1
        elif sql.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")):
            key = template(sql)
            seen[key] += 1
            example.setdefault(key, sql)

    await env.db.conn.set_trace_callback(trace)
    try:
        report = await env.run()
        assert report.result == "success", report.failures
        await CalendarSync(env.tenant, env.store, env.sync_store, env.graph.client, env.pbx.client,
                           env.graph.clock.time).run(RunReport())
    finally:
        await env.db.conn.set_trace_callback(None)
    return seen, example


async def plan_of(env: SyncEnv, sql: str) -> list[str]:
    async with env.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}") as cursor:
        return [str(row[3]) for row in await cursor.fetchall()]


async def test_no_statement_of_a_run_scans_a_growing_table(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=60, contact_owners=10)
    sync_env.configure(**scenario.config_sections(), events={"enabled": True})
    start = sync_env.graph.clock.now() + timedelta(hours=1)
    for user in world.users[:10]:
        sync_env.graph.tenant.put_event(user, f"e-{user[-3:]}", subject="x", showAs="busy", isCancelled=False,
                                        start={"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                                        end={"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                                             "timeZone": "UTC"})
    first, examples = await traced_run(sync_env)  # the first sync
    scenario.working_day(world)
    again, more = await traced_run(sync_env)  # an incremental run of every kind
    counts = first + again
    examples.update(more)
    assert len(counts) > 40  # the trace saw the run
    problems = []
    for key, times in sorted(counts.items()):
        if key == "BEGIN":
            continue
        try:
            plan = await plan_of(sync_env, examples[key])
        except sqlite3.Error:
            continue  # e.g. a statement of a finished transaction's temp objects
        aliases = {alias: table for table, alias in re.findall(r"(?:FROM|JOIN) (\w+) (\w+)", examples[key])
                   if table in GROWING}
        for step in plan:
            match = re.match(r"(SCAN|SEARCH) (\w+)", step)
            name = aliases.get(match.group(2), match.group(2)) if match else None
            table = name if name in GROWING else None
            if step.startswith("SCAN") and table:
                problems.append(f"{times}x {key}\n    {step}")
            elif times >= PER_OBJECT and table and re.fullmatch(r".*\((tenant=\?|tenant=\? AND kind=\?)\)", step):
                problems.append(f"{times}x per object, by tenant and kind only: {key}\n    {step}")
    assert problems == [], "\n".join(problems)


async def test_applied_writes_cost_one_transaction_per_chunk_not_per_object(sync_env: SyncEnv) -> None:
    world = scenario.build(sync_env.graph.tenant, users=120, contact_owners=0)
    begins = 0

    def trace(sql: str) -> None:
        nonlocal begins
        begins += sql.lstrip().upper().startswith("BEGIN")

    await sync_env.db.conn.set_trace_callback(trace)
    try:
        report = await sync_env.run()
    finally:
        await sync_env.db.conn.set_trace_callback(None)
    assert report.counts == {"create": len(world.users)}
    # reading (one merge per 200 users), the inventory's time, the held set, the
    # commit, and per chunk of 50 creates: one for the journal, one for the bookkeeping
    assert begins <= 12, begins


async def test_the_history_retention_delete_and_an_objects_history_use_their_indexes(sync_env: SyncEnv) -> None:
    (step,) = await plan_of(sync_env, PRUNE_HISTORY.replace("?", "1.0"))
    assert re.fullmatch(r"SEARCH object_history USING (COVERING )?INDEX object_history_at \(at<\?\)", step), step
    lookup = ("SELECT action FROM object_history WHERE tenant = 't' AND kind = 'user' AND graph_id = 'u'"
              " ORDER BY at DESC LIMIT 5")
    assert await plan_of(sync_env, lookup) == [
        "SEARCH object_history USING INDEX object_history_object (tenant=? AND kind=? AND graph_id=?)"]


async def test_what_a_run_plans_besides_its_delta_is_found_by_index(sync_env: SyncEnv) -> None:
    """A run that plans only what changed finds the rest of its work (changed copies, due retries, ended
    grace periods, due photo checks) by index: none of these reads every copy or pushed object."""
    def bound(sql: str, *values: str) -> str:
        for value in values:
            sql = sql.replace("?", value, 1)
        return sql

    expected = {
        bound(DIRTY_IDS, "'t'", "'user'"): r"SEARCH graph_objects USING (COVERING )?INDEX graph_objects_dirty \(tenant=\? AND kind=\?\)",
        bound(CLEAR_DIRTY, "'t'", "'user'"): r"SEARCH graph_objects USING (COVERING )?INDEX graph_objects_dirty \(tenant=\? AND kind=\?\)",
        bound(FAILED_OBJECTS, "'t'", "'user'"):
            r"SEARCH synced_objects USING INDEX synced_objects_retry \(tenant=\? AND kind=\? AND retry_at>\?\)",
        bound(OUT_OF_SCOPE_BEFORE, "'t'", "'user'", "1.0"):
            r"SEARCH synced_objects USING INDEX synced_objects_out_of_scope \(tenant=\? AND kind=\? AND out_of_scope_since<\?\)",
        bound(PHOTO_CHECKS_DUE, "'t'", "1.0"): r"SEARCH photo_checks USING INDEX photo_checks_due \(tenant=\? AND due_at<\?\)",
    }
    for sql, pattern in expected.items():
        (step,) = await plan_of(sync_env, sql)
        assert re.fullmatch(pattern, step), (sql, step)


async def test_the_notification_endpoints_and_the_renewals_lookups_use_their_indexes(sync_env: SyncEnv) -> None:
    """The endpoint finds a subscription by its id (every notification); a keeper round reads its tenant's
    subscriptions by the expiry index, in expiry order (the renewals first) with no sort of its own; the due
    marks and the folder listings are read by tenant: none scans another tenant's rows."""
    by_id = SUBSCRIPTION_BY_ID.replace("?", "'t'", 1).replace("?", "'sub'", 1)
    assert await plan_of(sync_env, by_id) == [
        "SEARCH notify_subscriptions USING INDEX sqlite_autoindex_notify_subscriptions_1 (tenant=? AND id=?)"]
    assert await plan_of(sync_env, KEEPER_ROUND.replace("?", "'t'")) == [
        "SEARCH notify_subscriptions USING INDEX notify_subscriptions_expiry (tenant=?)"]
    for table in ("notify_due", "folder_listings"):
        (step,) = await plan_of(sync_env, f"SELECT * FROM {table} WHERE tenant = 't'")
        assert re.fullmatch(rf"SEARCH {table} USING INDEX sqlite_autoindex_{table}_1 \(tenant=\?\)", step), step


async def test_shared_mailboxes_and_listed_ones_are_found_by_index(sync_env: SyncEnv) -> None:
    """Which mailboxes are shared (or unreadable), and a listed mailbox by its UPN: each by an index, so a
    run with shared mailboxes on reads no copy of an unchanged user."""
    purpose = MAILBOXES_OF_PURPOSE.format(upn="json_extract(u.data, '$.userPrincipalName')",
                                          said="json_extract(m.data, '$.userPurpose')")
    steps = await plan_of(sync_env, purpose.replace("?", "'t'", 1).replace("?", "'shared'", 1))
    assert steps[0] == "SEARCH m USING INDEX graph_objects_mailbox_purpose (tenant=? AND <expr>=?)", steps
    assert re.fullmatch(r"SEARCH u USING INDEX sqlite_autoindex_graph_objects_1 \(tenant=\? AND kind=\? AND id=\?\)",
                        steps[1]), steps
    by_upn = LIVE_USER_BY_UPN.format(upn="json_extract(data, '$.userPrincipalName')")
    assert await plan_of(sync_env, by_upn.replace("?", "'t'", 1).replace("?", "'a@b'", 1)) == [
        "SEARCH graph_objects USING INDEX graph_objects_user_upn (tenant=? AND <expr>=?)"]
