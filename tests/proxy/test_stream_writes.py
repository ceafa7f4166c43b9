"""A stream's events go out in as few writes as the upstream allows: what it had already sent
together goes to the client together (one chunk of the HTTP body), and nothing it sent is
held back for what it has not sent yet. Seen on the wire, HTTP chunk by HTTP chunk."""

from __future__ import annotations

import pytest

from billing.models import UsageRecord
from tests.live_router import wait_for_charges
from tests.proxy import stream_wire
from tests.proxy.stream_wire import events_in

MESSAGES = [{"role": "user", "content": "Hello"}]


def http_chunks(base_url: str, secret: str, body: dict) -> list[tuple[float, bytes]]:
    return stream_wire.http_chunks(base_url, "/v1/chat/completions",
                                   {"Authorization": f"Bearer {secret}"}, body)


@pytest.fixture
def secret(openai_worker, make_key) -> str:
    return make_key()[1]


def test_chunks_the_upstream_sent_together_go_out_in_one_write(router, upstream, secret):
    upstream.configure(one_write=True, reply="One two three four five six seven eight.")
    chunks = http_chunks(router.base_url, secret, {
        "model": "test-model", "messages": MESSAGES, "stream": True, "max_tokens": 50,
        "stream_options": {"include_usage": True}})
    events = events_in(chunks)
    contents = [event for event in events if b'"content":"' in event]
    assert len(contents) >= 9  # the role chunk and every word
    assert events[-1] == b"data: [DONE]"
    # The first word goes out as soon as it is rendered, with the role chunk before it
    # (not with the rest of the stream: the first token is not kept waiting for it); the
    # rest was buffered together and goes in one write (thirteen writes in all before),
    # two if the upstream's first read took only part of it.
    assert 2 <= len(chunks) <= 3
    first_word = next(i for i, (_, data) in enumerate(chunks) if b'"content":"One"' in data)
    assert b'"role":"assistant"' in b"".join(data for _, data in chunks[:first_word + 1])
    assert b'"content":" two"' not in chunks[first_word][1]
    wait_for_charges()
    assert UsageRecord.objects.get().status == UsageRecord.Status.OK


def test_a_chunk_is_never_held_back_for_the_next_one(router, upstream, secret):
    upstream.configure(chunk_delay=0.3, reply="One two three.")
    chunks = http_chunks(router.base_url, secret, {
        "model": "test-model", "messages": MESSAGES, "stream": True, "max_tokens": 20})
    words = [(at, data) for at, data in chunks if b'"content":"' in data
             and b'"content":""' not in data]
    assert len(words) >= 3  # each word in a write of its own: 0.3 s apart upstream
    # The first word left as soon as it came, not with the next one 0.3 s later.
    assert words[1][0] - words[0][0] > 0.2
    wait_for_charges()
