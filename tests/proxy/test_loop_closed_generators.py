"""A stream leaves no async generator of the router's for the event loop to close.

An async generator dropped before its end is closed by the loop's finalizer hook: a task of
its own and a wake-up of the loop through its self-pipe, for every stream. The OpenAI
adapter's reader returned at ``[DONE]`` from inside a loop over an inner generator, which
it left at its last ``yield``: every stream read to its end paid for it.
"""

from __future__ import annotations

import gc

import httpx
import openai
import pytest

from tests.live_router import wait_for_charges

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def client(openai_worker, make_key, client_for) -> openai.OpenAI:
    return client_for(make_key()[1])


def test_streams_read_to_their_end_leave_no_generator_for_the_loop(client, router):
    with router.loop_closed_generators() as closed_by_the_loop:
        for _ in range(3):
            chunks = list(client.chat.completions.create(
                model="test-model", messages=MESSAGES, max_tokens=5, stream=True,
                stream_options={"include_usage": True}))
            assert chunks[-1].usage is not None
        wait_for_charges()
        router.drain()
        gc.collect()  # a generator only a cycle kept would be finalized here
    assert closed_by_the_loop == []


def test_answers_and_a_stream_the_client_drops_leave_no_generator_for_the_loop(
        client, router, upstream, make_key):
    upstream.configure(chunk_delay=0.05, reply="One two three four five six seven eight.")
    with router.loop_closed_generators() as closed_by_the_loop:
        client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
        with httpx.stream("POST", f"{router.base_url}/chat/completions",
                          headers={"Authorization": f"Bearer {make_key()[1]}"},
                          json={"model": "test-model", "messages": MESSAGES,
                                "stream": True, "max_tokens": 50}, timeout=10) as answer:
            for line in answer.iter_lines():
                if '"content":"One"' in line:
                    break  # the client hangs up mid-stream
        wait_for_charges()
        router.drain()
        gc.collect()
    assert closed_by_the_loop == []
