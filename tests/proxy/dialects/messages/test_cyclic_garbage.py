"""Native Anthropic answers and streams, and the Messages dialect translated to an OpenAI
worker, leave nothing of the router's for the cycle collector either (see
tests/proxy/test_cyclic_garbage.py)."""

from __future__ import annotations

import anthropic
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


@pytest.mark.usefixtures("redis_db")
def test_streams_broken_off_by_an_error_event_leave_nothing_either(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, router
):
    # The error event is kept by the stream until the chunks before it are taken, then
    # raised to the relay, which answers it (tests/proxy/test_translated_stream.py: the
    # stream itself, an error read ahead and never raised).
    anthropic_upstream.configure(error_after_events=4, one_write=False)
    client = sdk_for(production_key(make_key))

    def broken_stream() -> None:
        with pytest.raises(anthropic.APIError), client.messages.stream(
                model="claude-test", max_tokens=50, messages=MESSAGES) as stream:
            "".join(stream.text_stream)

    broken_stream()
    router.drain()
    with router_findings(router) as found:
        for _ in range(2):
            broken_stream()
    assert found == []
