"""The Responses dialect, whole and streamed, leaves nothing of the router's for the cycle
collector (see tests/proxy/test_cyclic_garbage.py)."""

from __future__ import annotations

import pytest

from accounts.models import ApiKey
from tests.live_router import wait_for_charges
from tests.proxy.test_cyclic_garbage import cycle_collector_findings


@pytest.mark.usefixtures("redis_db")
def test_responses_leave_nothing_of_the_routers_for_the_cycle_collector(
    openai_worker, make_key, client_for, router
):
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=1000, tpm=1_000_000)
    client = client_for(secret)
    client.responses.create(model="test-model", input="Hi.", max_output_tokens=400)
    router.drain()

    with cycle_collector_findings() as found:
        for _ in range(2):
            assert client.responses.create(model="test-model", input="Hi.",
                                           max_output_tokens=400).output_text
            events = list(client.responses.create(model="test-model", input="Hi.",
                                                  max_output_tokens=400, stream=True))
            assert events[-1].type == "response.completed"
        wait_for_charges()
    router.drain()
    assert found == []
