"""The local OpenAI-compatible upstream, checked with the openai SDK and OpenAI's schemas."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from proxy.ground.tokens import count_text_tokens, encode_text, estimate_prompt_tokens
from tests.openai_schema import validate
from tests.proxy.upstream import DEFAULT_REPLY, UpstreamServer

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something deterministic."}]
PROMPT_TOKENS = 3 + (3 + 1 + count_text_tokens("You are terse.")) + (
    3 + 1 + count_text_tokens("Say something deterministic."))


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def client(upstream: UpstreamServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0, timeout=10)


def post_raw(server: UpstreamServer, body: dict[str, Any], path: str = "/v1/chat/completions",
             headers: dict[str, str] | None = None
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A plain HTTP request, to see the exact bytes on the wire."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("POST", path, json.dumps(body),
                       {"Content-Type": "application/json", **(headers or {})})
    return connection, connection.getresponse()


def sse_events(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking OpenAI's exact framing on the way."""
    assert raw.endswith(b"\n\n")
    events = raw.decode("utf-8").split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event.removeprefix("data: ") for event in events]


# --- non-streamed -------------------------------------------------------------------------


def test_completion_with_the_sdk(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == count_text_tokens(DEFAULT_REPLY)
    assert usage.prompt_tokens == PROMPT_TOKENS
    assert usage.prompt_tokens <= estimate_prompt_tokens(MESSAGES)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert upstream.bodies == [{"model": "gpt-4o-mini", "messages": MESSAGES}]


def test_completion_matches_openai_schema(upstream: UpstreamServer) -> None:
    _, response = post_raw(upstream, {"model": "m", "messages": MESSAGES})
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("application/json")
    body = json.loads(response.read())
    validate(body, "CreateChatCompletionResponse")
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_token_limit_cuts_the_reply(client: openai.OpenAI, param: str) -> None:
    completion = client.chat.completions.create(model="m", messages=MESSAGES,
                                                **{param: 5})  # type: ignore[arg-type]
    text = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert encode_text(text or "") == encode_text(DEFAULT_REPLY)[:5]


def test_limit_above_the_reply_changes_nothing(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1000)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == DEFAULT_REPLY


def test_reply_can_be_configured_or_computed(upstream: UpstreamServer,
                                             client: openai.OpenAI) -> None:
    upstream.configure(reply="Héllo 🚀 wörld")
    completion = client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "Héllo 🚀 wörld"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == count_text_tokens("Héllo 🚀 wörld")
    upstream.configure(reply=lambda body: body["messages"][-1]["content"].upper())
    completion = client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "SAY SOMETHING DETERMINISTIC."


def test_n_choices_and_usage_options(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    upstream.configure(cached_tokens=4, response_model="gpt-4o-mini-2024-07-18")
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2 * count_text_tokens(DEFAULT_REPLY)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 4
    upstream.configure(report_usage=False)
    assert client.chat.completions.create(model="m", messages=MESSAGES).usage is None


# --- streamed -------------------------------------------------------------------------------


def test_stream_with_the_sdk(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY
    # One token per content chunk, like a real model.
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == count_text_tokens(DEFAULT_REPLY)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_text_tokens(DEFAULT_REPLY)
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    assert upstream.completed_streams == 1


def test_stream_wire_format_matches_openai(upstream: UpstreamServer) -> None:
    _, response = post_raw(upstream, {"model": "m", "messages": MESSAGES, "stream": True,
                                      "stream_options": {"include_usage": True},
                                      "max_tokens": 3})
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    events = sse_events(response.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == [
        "This", " is", " a"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-1]["usage"]["total_tokens"] == PROMPT_TOKENS + 3


def test_stream_without_include_usage_has_no_usage(upstream: UpstreamServer) -> None:
    _, response = post_raw(upstream, {"model": "m", "messages": MESSAGES, "stream": True})
    events = sse_events(response.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_stream_splits_no_character(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    upstream.configure(reply="Rocket 🚀 family 👨\u200d👩\u200d👧 日本語")
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == "Rocket 🚀 family 👨\u200d👩\u200d👧 日本語"
    assert all("\ufffd" not in piece for piece in pieces)


def test_stream_dies_after_n_chunks(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    upstream.configure(die_after_chunks=4)
    received: list[str] = []

    def read_all() -> None:
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                                    stream_options={"include_usage": True}):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError):
        read_all()
    assert received == ["", "This", " is", " a"]
    # On the wire: the body is cut off, with no [DONE] and no end of the chunked encoding.
    _, response = post_raw(upstream, {"model": "m", "messages": MESSAGES, "stream": True})
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    events = sse_events(cut.value.partial)
    assert len(events) == 4
    assert "[DONE]" not in events


def test_non_stream_die_drops_the_connection(upstream: UpstreamServer,
                                             client: openai.OpenAI) -> None:
    upstream.configure(die_after_chunks=0)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert len(upstream.bodies) == 1


def test_error_event_mid_stream(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    upstream.configure(error_after_chunks=2)
    with pytest.raises(openai.APIError, match="server had an error"):
        list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    _, response = post_raw(upstream, {"model": "m", "messages": MESSAGES, "stream": True})
    events = sse_events(response.read())
    assert len(events) == 3
    validate(json.loads(events[-1]), "ErrorResponse")


def test_client_disconnect_is_noticed(upstream: UpstreamServer) -> None:
    upstream.configure(chunk_delay=0.02)
    connection, response = post_raw(upstream, {"model": "m", "messages": MESSAGES,
                                               "stream": True})
    assert response.readline().strip()  # the first chunk's size: the stream is flowing
    response.close()
    connection.close()
    deadline = time.monotonic() + 5
    while upstream.client_disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upstream.client_disconnects == 1
    assert upstream.completed_streams == 0


# --- failures and timing ----------------------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [
    (500, openai.InternalServerError), (503, openai.InternalServerError),
    (429, openai.RateLimitError), (400, openai.BadRequestError),
    (404, openai.NotFoundError),
])
def test_fixed_status_errors(upstream: UpstreamServer, client: openai.OpenAI, status: int,
                             error: type[openai.APIStatusError]) -> None:
    upstream.configure(status=status, error_headers={"Retry-After": "7"})
    for stream in (False, True):
        with pytest.raises(error) as raised:
            client.chat.completions.create(model="m", messages=MESSAGES, stream=stream)
        assert raised.value.status_code == status
        assert raised.value.response.headers["retry-after"] == "7"
        validate(raised.value.response.json(), "ErrorResponse")


def test_custom_error_body(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    body = {"error": {"message": "quota", "type": "insufficient_quota", "param": None,
                      "code": "insufficient_quota"}}
    upstream.configure(status=429, error_body=body)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert raised.value.response.json() == body


def test_bad_json_is_a_400(upstream: UpstreamServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    connection.request("POST", "/v1/chat/completions", b"{not json",
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 400
    validate(json.loads(response.read()), "ErrorResponse")
    assert upstream.requests[-1].raw == b"{not json"
    assert upstream.requests[-1].body is None


def test_first_byte_delay(upstream: UpstreamServer) -> None:
    upstream.configure(first_byte_delay=0.5)
    slow = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        slow.chat.completions.create(model="m", messages=MESSAGES)
    patient = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0, timeout=5)
    started = time.monotonic()
    patient.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started >= 0.5


def test_chunk_delay(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    upstream.configure(chunk_delay=0.02, reply="one two three four five")
    arrivals = []
    started = time.monotonic()
    for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 7  # role, five words, finish
    assert arrivals[-1] >= 6 * 0.02
    assert arrivals[-1] - arrivals[0] >= 5 * 0.02  # spread out, not sent at once


def test_api_key_is_checked_and_recorded(upstream: UpstreamServer) -> None:
    upstream.configure(require_api_key="sk-worker-secret")
    wrong = openai.OpenAI(base_url=upstream.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.chat.completions.create(model="m", messages=MESSAGES)
    validate(raised.value.response.json(), "ErrorResponse")
    right = openai.OpenAI(base_url=upstream.base_url, api_key="sk-worker-secret",
                          max_retries=0)
    right.chat.completions.create(model="m", messages=MESSAGES)
    assert [r.headers["Authorization"] for r in upstream.requests] == [
        "Bearer nope", "Bearer sk-worker-secret"]


# --- other routes and plumbing ------------------------------------------------------------


def test_models(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["gpt-4o-mini", "test-model"]
    upstream.configure(models=("a", "b", "c"))
    connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    connection.request("GET", "/v1/models")
    body = json.loads(connection.getresponse().read())
    validate(body, "ListModelsResponse")
    assert [model["id"] for model in body["data"]] == ["a", "b", "c"]


def test_unknown_route_is_a_json_404(upstream: UpstreamServer) -> None:
    _, response = post_raw(upstream, {}, path="/v1/embeddings")
    assert response.status == 404
    validate(json.loads(response.read()), "ErrorResponse")


def test_records_every_request_body(upstream: UpstreamServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="upstream-name", messages=MESSAGES, max_tokens=7,
                                   extra_body={"custom_field": {"kept": True}})
    list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                        stream_options={"include_usage": True}))
    first, second = upstream.bodies
    assert first["model"] == "upstream-name"
    assert first["max_tokens"] == 7
    assert first["custom_field"] == {"kept": True}
    assert second["stream"] is True
    assert second["stream_options"] == {"include_usage": True}
    upstream.reset()
    assert upstream.bodies == []


def test_usable_from_another_event_loop(upstream: UpstreamServer) -> None:
    # The way the proxy calls it: an aiohttp client in a different loop (and thread).
    async def call() -> tuple[dict[str, Any], list[bytes]]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{upstream.base_url}/chat/completions",
                                    json={"model": "m", "messages": MESSAGES}) as response:
                answer = await response.json()
            async with session.post(f"{upstream.base_url}/chat/completions",
                                    json={"model": "m", "messages": MESSAGES, "stream": True}
                                    ) as response:
                lines = [line async for line in response.content if line.strip()]
        return answer, lines

    answer, lines = asyncio.run(call())
    assert answer["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert lines[-1] == b"data: [DONE]\n"


def test_concurrent_streams(upstream: UpstreamServer) -> None:
    upstream.configure(chunk_delay=0.005)
    texts: list[str] = []

    def one() -> None:
        local = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0)
        chunks = local.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        texts.append("".join(c.choices[0].delta.content or "" for c in chunks))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert texts == [DEFAULT_REPLY] * 8
    assert upstream.completed_streams == 8


def test_start_stop_and_reuse_ports() -> None:
    with UpstreamServer() as first, UpstreamServer() as second:
        assert first.port != second.port
        assert first.port > 0
    # Stopped: the port no longer answers.
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", first.port, timeout=2).request("GET", "/")
    first.stop()  # stopping twice is harmless
