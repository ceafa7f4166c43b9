"""A Messages stream from an Anthropic worker, relayed natively, goes out in as few writes
as the upstream allows: the events it sent together go to the client together, the first
text delta with what came before it, and none is held back for one not sent yet."""

from __future__ import annotations

import itertools

import pytest

from billing.models import UsageRecord
from tests.live_router import wait_for_charges
from tests.proxy.stream_wire import events_in, http_chunks

BODY = {"model": "claude-test", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def headers(anthropic_worker, make_key) -> dict[str, str]:
    return {"x-api-key": make_key()[1], "anthropic-version": "2023-06-01"}


def _names(data: bytes) -> list[bytes]:
    return [event.split(b"\n")[0].removeprefix(b"event: ")
            for event in events_in([(0.0, data)])]


def test_events_the_upstream_sent_together_go_out_in_one_write(router, anthropic_upstream,
                                                              headers):
    anthropic_upstream.configure(one_write=True)
    chunks = http_chunks(router.base_url, "/v1/messages", headers, BODY)
    names = [name for _, data in chunks for name in _names(data)]
    deltas = names.count(b"content_block_delta")
    assert deltas == len(anthropic_upstream.answers[-1].text_pieces) > 10
    assert names[:3] == [b"message_start", b"content_block_start", b"ping"]
    assert names[-3:] == [b"content_block_stop", b"message_delta", b"message_stop"]
    # Up to the first text delta in one write; the rest in one more (two if the first
    # read took only part of it): each event went in a write of its own before.
    assert 2 <= len(chunks) <= 3
    assert _names(chunks[0][1]) == [b"message_start", b"content_block_start", b"ping",
                                    b"content_block_delta"]
    wait_for_charges()
    assert UsageRecord.objects.get().status == UsageRecord.Status.OK


def test_an_event_is_never_held_back_for_the_next_one(router, anthropic_upstream, headers):
    anthropic_upstream.configure(chunk_delay=0.2, reply="One two three.")
    chunks = http_chunks(router.base_url, "/v1/messages", headers, BODY)
    # Every event came 0.2 s after the one before: each went out alone, as it came.
    assert all(len(_names(data)) == 1 for _, data in chunks[:-2])
    starts = [at for at, _ in chunks[:-1]]
    assert all(later - earlier > 0.1 for earlier, later in itertools.pairwise(starts))
    wait_for_charges()
