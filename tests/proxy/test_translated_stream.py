"""A translated stream (``proxy.upstream.providers.sse.TranslatedStream``: Anthropic's, and
the native dialects') says a chunk is ready only when the events buffered make one: an
event that makes none (a ``ping``) or a line not yet whole is no chunk, and a malformed
event is raised in its turn, after the chunks before it."""

from __future__ import annotations

import pytest
from yarl import URL

from proxy.upstream.http_client import UpstreamResponse, upstream_session
from proxy.upstream.providers.anthropic.stream import AnthropicStream
from proxy.upstream.providers.base import UpstreamError, UpstreamTarget
from tests.proxy.test_cyclic_garbage import cycle_collector_findings
from tests.proxy.test_upstream_http_client import (
    JSON,
    TIMEOUT,
    Server,
    buffered,
    run,
    sse_in_turns,
)

START = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
         b'"usage":{"input_tokens":3,"output_tokens":1}}}\n\n')
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
         b'"delta":{"type":"text_delta","text":"Hi"}}\n\n')
BROKEN = b"event: content_block_delta\ndata: {not json\n\n"


async def _open(url: URL) -> tuple[UpstreamResponse, AnthropicStream]:
    """A chat stream from an Anthropic worker at ``url``, as the provider opens one."""
    response = await upstream_session().post(url, data=b"{}", headers=JSON, timeout=TIMEOUT)
    target = UpstreamTarget(worker_id=1, worker_name="w", kind="anthropic", base_url=str(url))
    return response, AnthropicStream(response, target, model="claude", include_usage=True)


def test_a_chunk_is_ready_only_when_the_events_buffered_make_one():
    # The turns of the upstream: the message's start; a ping and half of a delta; the
    # rest of the delta and a malformed event.
    pieces = (START, PING + DELTA[:30], DELTA[30:] + BROKEN)

    async def scenario() -> tuple[list[object], bool]:
        handler, turns = sse_in_turns(pieces)  # the last turn, the body's end, never comes

        async with Server(handler) as url:
            response, stream = await _open(url)
            chunks = aiter(stream)
            seen: list[object] = [stream.ready()]  # nothing buffered
            turns[0].set()
            await buffered(response, len(pieces[0]))
            seen.append(stream.ready())  # message_start: the role chunk
            seen.append((await anext(chunks))["choices"][0]["delta"])
            turns[1].set()
            await buffered(response, len(pieces[1]))
            seen.append(stream.ready())  # a ping (no chunk), a delta not yet whole
            turns[2].set()
            # Taken already: the ping, and the delta's event line.
            taken = len(PING) + DELTA.index(b"\n") + 1
            await buffered(response, len(pieces[1]) + len(pieces[2]) - taken)
            seen.append(stream.ready())  # the delta whole
            seen.append((await anext(chunks))["choices"][0]["delta"])
            seen.append(stream.ready())  # the malformed event: its error is ready
            with pytest.raises(UpstreamError, match="malformed"):
                await anext(chunks)
            return seen, response.connection.lost

    with cycle_collector_findings() as found:
        seen, closed = run(scenario)
    assert seen == [False, True, {"role": "assistant", "content": ""}, False, True,
                    {"content": "Hi"}, True]
    assert closed  # broken off: the connection is not used again
    # The error was kept for its turn without the frames it was raised in, which hold the
    # stream: nothing of the router's is left for the cycle collector.
    assert found == [], " ".join(found)


def test_an_error_read_ahead_and_never_raised_leaves_no_cycle():
    # The relay stops reading (the client hung up, the cap was reached) after the error
    # was read ahead: the stream is dropped still holding it.
    async def scenario() -> bool:
        handler, turns = sse_in_turns((START + BROKEN,))

        async with Server(handler) as url:
            response, stream = await _open(url)
            chunks = aiter(stream)
            turns[0].set()
            await buffered(response, len(START + BROKEN))
            await anext(chunks)  # the role chunk
            kept = stream.ready()  # the malformed event read ahead, its error kept
            await chunks.aclose()
            await stream.aclose()
            return kept

    with cycle_collector_findings() as found:
        assert run(scenario)
    assert found == [], " ".join(found)
