"""A chat-completions stream from an Anthropic worker goes out in as few writes as the
upstream allows, as an OpenAI worker's does (tests/proxy/test_stream_writes.py), though
some of Anthropic's events (``ping``, ``content_block_stop``) make no chunk: the events
buffered are translated ahead to know whether a chunk is ready. Read to its end, the
stream gives its upstream connection back for the next call."""

from __future__ import annotations

import itertools

import openai
import orjson
import pytest

from billing.models import UsageRecord
from tests.live_router import wait_for_charges
from tests.proxy.stream_wire import events_in, http_chunks

BODY = {"model": "claude-test", "messages": [{"role": "user", "content": "Hello"}],
        "stream": True, "max_tokens": 60, "stream_options": {"include_usage": True}}


@pytest.fixture
def secret(anthropic_worker, make_key) -> str:
    return make_key()[1]


def _contents(chunks: list[tuple[float, bytes]]) -> list[str]:
    return [orjson.loads(event[len(b"data: "):])["choices"][0]["delta"]["content"]
            for event in events_in(chunks) if b'"content":"' in event
            and b'"content":""' not in event]


def test_events_the_upstream_sent_together_go_out_in_one_write(router, anthropic_upstream,
                                                              secret):
    anthropic_upstream.configure(one_write=True)
    chunks = http_chunks(router.base_url, "/v1/chat/completions",
                         {"Authorization": f"Bearer {secret}"}, BODY)
    words = _contents(chunks)
    answer = anthropic_upstream.answers[-1]
    assert words == answer.text_pieces
    assert len(words) > 10
    assert events_in(chunks)[-1] == b"data: [DONE]"
    # The role chunk and the first word together, alone; the rest (the words, the
    # finish, the usage) in one write, two if the first read took only part of it:
    # every event went in a write of its own before.
    assert 2 <= len(chunks) <= 3
    first_word = next(i for i, (_, data) in enumerate(chunks)
                      if orjson.dumps(words[0]) in data)
    assert b'"role":"assistant"' in b"".join(data for _, data in chunks[:first_word + 1])
    assert orjson.dumps(words[1]) not in chunks[first_word][1]
    wait_for_charges()
    assert UsageRecord.objects.get().status == UsageRecord.Status.OK


def test_a_chunk_is_never_held_back_behind_an_event_that_makes_none(router,
                                                                    anthropic_upstream,
                                                                    secret):
    # 0.2 s between events: the ping after the first block's start makes no chunk, and
    # the role chunk before it must not wait for the first word after it.
    anthropic_upstream.configure(chunk_delay=0.2, reply="One two three.")
    chunks = http_chunks(router.base_url, "/v1/chat/completions",
                         {"Authorization": f"Bearer {secret}"}, BODY)
    role = next(at for at, data in chunks if b'"role":"assistant"' in data)
    words = [at for at, data in chunks if b'"content":"' in data
             and b'"content":""' not in data]
    # Each piece of the reply in a write of its own.
    assert len(words) == len(anthropic_upstream.answers[-1].text_pieces) >= 3
    assert words[0] - role > 0.3  # the ping's turn and the first word's
    assert all(later - earlier > 0.15 for earlier, later in itertools.pairwise(words))
    wait_for_charges()


def test_streams_read_to_their_end_share_one_upstream_connection(router, anthropic_upstream,
                                                                 secret):
    client = openai.OpenAI(base_url=router.base_url, api_key=secret, max_retries=0,
                           timeout=20)
    for _ in range(3):
        stream = client.chat.completions.create(**{**BODY, "stream_options": None})
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream
                       if chunk.choices)
    peers = [request.peer for request in anthropic_upstream.requests
             if request.path == "/v1/messages"]
    assert len(peers) == 3
    assert len(set(peers)) == 1, peers
    wait_for_charges()
