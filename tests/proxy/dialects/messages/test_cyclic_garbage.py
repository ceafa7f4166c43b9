"""Native Anthropic answers and streams, and the Messages dialect translated to an OpenAI
worker, leave nothing of the router's for the cycle collector either (see
tests/proxy/test_cyclic_garbage.py)."""

from __future__ import annotations

import pytest

from tests.proxy.test_cyclic_garbage import production_key, router_findings

MESSAGES = [{"role": "user", "content": "Say something deterministic."}]


@pytest.mark.usefixtures("redis_db")
@pytest.mark.parametrize("model", ["claude-test", "test-model"])
def test_messages_leave_nothing_of_the_routers_for_the_cycle_collector(
    anthropic_worker, openai_worker, make_key, sdk_for, router, model
):
    client = sdk_for(production_key(make_key))
    client.messages.create(model=model, max_tokens=50, messages=MESSAGES)
    router.drain()

    with router_findings(router) as found:
        for _ in range(2):
            assert client.messages.create(model=model, max_tokens=50,
                                          messages=MESSAGES).content
            with client.messages.stream(model=model, max_tokens=50,
                                        messages=MESSAGES) as stream:
                assert "".join(stream.text_stream)
    assert found == []
