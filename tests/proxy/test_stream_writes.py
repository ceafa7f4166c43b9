"""A stream's events go out in as few writes as the upstream allows: what it had already sent
together goes to the client together (one chunk of the HTTP body), and nothing it sent is
held back for what it has not sent yet. Seen on the wire, HTTP chunk by HTTP chunk."""

from __future__ import annotations

import socket
import time

import orjson
import pytest

from billing.models import UsageRecord
from tests.live_router import wait_for_charges

MESSAGES = [{"role": "user", "content": "Hello"}]


def http_chunks(base_url: str, secret: str, body: dict) -> list[tuple[float, bytes]]:
    """The router's answer as the HTTP chunks it was written in, each with when it came
    (seconds after the request went out)."""
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    payload = orjson.dumps(body)
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode() + payload
    chunks: list[tuple[float, bytes]] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(request)
        reader = sock.makefile("rb")
        head = reader.readline()
        assert head.startswith(b"HTTP/1.1 200"), head
        while reader.readline() not in (b"\r\n", b""):
            pass  # the headers
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            if size == 0:
                return chunks
            chunks.append((time.monotonic() - started, reader.read(size)))
            assert reader.read(2) == b"\r\n"


def events_in(chunks: list[tuple[float, bytes]]) -> list[bytes]:
    return [event for _, data in chunks for event in data.split(b"\n\n") if event]


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
    # Up to the first word each chunk goes out at once (the role's, then the first word's:
    # the first token is not kept waiting for the rest); the rest was buffered together,
    # and goes in one write (thirteen writes in all before), two if the upstream's first
    # read took only part of it.
    assert 3 <= len(chunks) <= 4
    assert [len(events_in([chunk])) for chunk in chunks[:2]] == [1, 1]
    assert b'"role":"assistant"' in chunks[0][1]
    assert b'"content":"One"' in chunks[1][1]
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
