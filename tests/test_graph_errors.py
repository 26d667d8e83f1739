"""Graph errors are named by their most specific code, nested ``innerError``
codes included, for the explanation and for the decision to retry."""

from __future__ import annotations

import pytest

from daemon.errors import AccessDenied, DeltaExpired, GraphError
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import error_codes, error_for
from graph_fixtures import GraphEnv

NESTED = {"error": {"code": "Forbidden", "message": "Access is denied.",
                    "innerError": {"code": "ErrorAccessDenied", "innerError": {"code": "ErrorMailboxNotShared"}}}}


def test_the_innermost_code_names_the_error_and_the_outer_one_is_kept_in_the_text() -> None:
    assert error_codes(NESTED) == ["Forbidden", "ErrorAccessDenied", "ErrorMailboxNotShared"]
    error = error_for(403, NESTED, url="https://graph.example/v1.0/users/u1/contactFolders")
    assert isinstance(error, AccessDenied) and error.code == "ErrorMailboxNotShared"
    assert "ErrorMailboxNotShared (Forbidden)" in str(error)
    assert error_codes({"error": {"code": "x", "innererror": {"code": "y"}}}) == ["x", "y"]  # either spelling
    assert error_codes({"error": "not an object"}) == [] and error_codes(b"bytes") == []


async def test_a_nested_sync_state_code_is_an_expired_delta(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Someone")
    graph_env.sim.fail_next(400, code="BadRequest", inner_code="syncStateNotFound", in_batch=False)
    with pytest.raises(DeltaExpired) as raised:
        await graph_env.client.get("/users/u1/contactFolders/contacts/contacts/delta")
    assert raised.value.code == "syncStateNotFound"


async def test_a_nested_busy_code_is_retried_like_a_throttle(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Someone")
    graph_env.sim.fail_next(400, code="BadRequest", inner_code="MailboxConcurrency", in_batch=True)
    graph_env.sim.fail_next(400, code="BadRequest", inner_code="ApplicationThrottled", in_batch=False,
                            path_pattern=r"/mailboxSettings$")
    results = [r async for r in BatchExecutor(graph_env.client).run([BatchRequest("a", "/users/u1/mailboxSettings", mailbox="u1")])]
    assert [r.status for r in results] == [200]
    assert (await graph_env.client.get("/users/u1/mailboxSettings")).status == 200
    statuses = [r.status for r in graph_env.sim.requests(r"/mailboxSettings$")]
    assert statuses == [400, 200, 400, 200]


async def test_a_plain_400_is_not_retried(graph_env: GraphEnv) -> None:
    graph_env.tenant.add_user("u1", displayName="Someone")
    graph_env.sim.fail_next(400, code="BadRequest", inner_code="ErrorInvalidIdMalformed", path_pattern=r"/mailboxSettings$")
    results = [r async for r in BatchExecutor(graph_env.client).run([BatchRequest("a", "/users/u1/mailboxSettings", mailbox="u1")])]
    assert [r.status for r in results] == [400] and isinstance(results[0].error, GraphError)
    assert results[0].error.code == "ErrorInvalidIdMalformed"
