"""A 50,000-user round is consumed as a stream: memory stays flat."""

from __future__ import annotations

import gc
import tracemalloc

from daemon.graph.delta import DeltaRound
from graph_fixtures import GraphEnv
from sim.generator import generate_tenant

USERS = 50_000
SELECT = "/users/delta?$select=displayName,givenName,surname,userPrincipalName,mail,jobTitle,department,businessPhones,mobilePhone,accountEnabled,userType,createdDateTime"


async def test_fifty_thousand_users_stream_in_flat_memory(graph_env: GraphEnv) -> None:
    graph_env.sim.api.settings.user_page_size = 200
    generate_tenant(graph_env.tenant, users=USERS, photo_fraction=0.0)
    gc.collect()
    tracemalloc.start()
    try:
        count = 0
        round_ = DeltaRound(graph_env.client, SELECT)
        async for change in round_:
            count += 1
            if count == 1_000:
                _, early_peak = tracemalloc.get_traced_memory()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == USERS
    assert round_.pages >= USERS // 200
    # The peak after 50,000 users is that of the first 1,000 (one page in
    # flight, client and simulator sides together), within a small margin,
    # and far below what holding every user would cost (about 65 MB here).
    assert peak < early_peak * 1.5 + 2_000_000, (early_peak, peak)
    assert peak < 12_000_000, peak
