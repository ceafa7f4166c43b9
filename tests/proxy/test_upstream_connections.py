"""The router keeps its connections to an upstream alive across calls, streams included: a
stream read to its end gives its connection back (a new one per stream cost a TCP and, to a
real upstream, a TLS handshake before each stream's request could leave), while a stream
the client abandons still drops its connection, which is how the upstream learns to stop."""

from __future__ import annotations

import time

from billing.models import Hold, UsageRecord
from tests.proxy.upstream import UpstreamServer

MESSAGES = [{"role": "user", "content": "Say something deterministic."}]


def chat_peers(upstream: UpstreamServer) -> list[object]:
    return [request.peer for request in upstream.requests
            if request.path == "/v1/chat/completions"]


def test_streams_and_answers_one_after_the_other_share_one_upstream_connection(
    openai_worker, upstream, make_key, client_for, router
):
    _, secret = make_key()
    client = client_for(secret)
    texts = []
    for _ in range(3):
        stream = client.chat.completions.create(model="test-model", messages=MESSAGES,
                                                max_tokens=20, stream=True)
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=20)

    assert all(texts)
    assert len(set(texts)) == 1
    peers = chat_peers(upstream)
    assert len(peers) == 4, peers
    assert len(set(peers)) == 1, peers
    router.drain()
    assert UsageRecord.objects.filter(status="ok").count() == 4
    assert not Hold.objects.filter(status="pending").exists()


def test_a_stream_the_client_abandons_still_drops_its_upstream_connection(
    openai_worker, upstream, make_key, client_for, router
):
    upstream.configure(chunk_delay=0.05)
    _, secret = make_key()
    client = client_for(secret)
    stream = client.chat.completions.create(model="test-model", messages=MESSAGES,
                                            max_tokens=50, stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 5
    while upstream.client_disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.client_disconnects == 1  # the upstream saw the router hang up

    upstream.configure(chunk_delay=0.0)
    list(client.chat.completions.create(model="test-model", messages=MESSAGES,
                                        max_tokens=20, stream=True))
    first, second = chat_peers(upstream)
    assert first != second  # the abandoned stream's connection was not reused
