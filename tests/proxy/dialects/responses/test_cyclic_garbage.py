"""The Responses dialect, whole and streamed, leaves nothing of the router's for the cycle
collector (see tests/proxy/test_cyclic_garbage.py)."""

from __future__ import annotations

import pytest

from tests.proxy.test_cyclic_garbage import production_key, router_findings


@pytest.mark.usefixtures("redis_db")
def test_responses_leave_nothing_of_the_routers_for_the_cycle_collector(
    openai_worker, make_key, client_for, router
):
    client = client_for(production_key(make_key))
    client.responses.create(model="test-model", input="Hi.", max_output_tokens=400)
    router.drain()

    with router_findings(router) as found:
        for _ in range(2):
            assert client.responses.create(model="test-model", input="Hi.",
                                           max_output_tokens=400).output_text
            events = list(client.responses.create(model="test-model", input="Hi.",
                                                  max_output_tokens=400, stream=True))
            assert events[-1].type == "response.completed"
    assert found == []
