"""Native Anthropic streams read to their end give their connection to the upstream back
for the next call (see tests/proxy/test_upstream_connections.py)."""

from __future__ import annotations

import pytest

MESSAGES = [{"role": "user", "content": "Say something deterministic."}]


@pytest.mark.parametrize("stream_again", [True, False])
def test_anthropic_streams_read_to_their_end_share_one_upstream_connection(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, router, stream_again
):
    _, secret = make_key()
    client = sdk_for(secret)
    for _ in range(2):
        with client.messages.stream(model="claude-test", max_tokens=100,
                                    messages=MESSAGES) as stream:
            assert "".join(stream.text_stream)
    if stream_again:
        with client.messages.stream(model="claude-test", max_tokens=100,
                                    messages=MESSAGES) as stream:
            assert "".join(stream.text_stream)
    else:
        assert client.messages.create(model="claude-test", max_tokens=100,
                                      messages=MESSAGES).content
    peers = [request.peer for request in anthropic_upstream.requests
             if request.path == "/v1/messages"]
    assert len(peers) == 3, peers
    assert len(set(peers)) == 1, peers
