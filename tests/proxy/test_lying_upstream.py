"""The lying test upstream itself, called directly (no router): each lie does what it says."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from proxy.ground.tokens import count_text_tokens, decode_tokens, encode_text, exact_prompt_tokens
from tests.openai_schema import validate
from tests.proxy.lying_upstream import (
    DEFAULT_REPLY,
    FILLER,
    LyingUpstream,
    lying_upstream,  # noqa: F401 - the fixture under test
)

MESSAGES = [{"role": "user", "content": "Say something, then stop."}]
PROMPT_TOKENS = exact_prompt_tokens(MESSAGES)
REPLY_TOKENS = count_text_tokens(DEFAULT_REPLY)
ARGS = '{"city": "Paris", "units": "metric"}'
THOUGHT = "The user wants a sentence. I will give one."


@pytest.fixture
def liar(request: pytest.FixtureRequest) -> LyingUpstream:
    # The module's fixture, under a name that does not shadow its import in every test.
    return request.getfixturevalue("lying_upstream")


def post(server: LyingUpstream, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/chat/completions", timeout=10,
                          json={"model": "gpt-4o-mini", "messages": MESSAGES, **body})
    assert response.status_code == 200, response.text
    return response.json()


def stream(server: LyingUpstream, **body: Any) -> list[dict[str, Any]]:
    """The chunks of a stream, read as raw SSE (the SDK would reject some of the shapes)."""
    with httpx.stream("POST", f"{server.base_url}/chat/completions", timeout=10,
                      json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True,
                            **body}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def texts(chunks: list[dict[str, Any]], key: str = "content") -> dict[int, str]:
    """Each choice's text for one delta field, joined over the chunks."""
    joined: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            joined[choice["index"]] = joined.get(choice["index"], "") + (
                choice["delta"].get(key) or "")
    return joined


def first_tokens(text: str, tokens: int) -> str:
    return decode_tokens(encode_text(text)[:tokens])


def with_usage(chunks: list[dict[str, Any]]) -> list[int]:
    return [i for i, chunk in enumerate(chunks) if chunk.get("usage") is not None]


# --- honest by default ----------------------------------------------------------------------


def test_by_default_it_answers_honestly_in_openai_s_shape(liar: LyingUpstream) -> None:
    client = openai.OpenAI(base_url=liar.base_url, api_key="x", max_retries=0, timeout=10)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS, REPLY_TOKENS)
    assert 55 <= liar.lies.reply_tokens == REPLY_TOKENS <= 65
    validate(post(liar), "CreateChatCompletionResponse")
    for chunk in stream(liar, stream_options={"include_usage": True}):
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_the_sdk_reads_an_honest_stream_whole(liar: LyingUpstream) -> None:
    client = openai.OpenAI(base_url=liar.base_url, api_key="x", max_retries=0, timeout=10)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        DEFAULT_REPLY)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == REPLY_TOKENS


def test_it_refuses_a_body_without_messages_and_lists_models_for_probes(
        liar: LyingUpstream) -> None:
    refused = httpx.post(f"{liar.base_url}/chat/completions", json={"model": "m"}, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "messages"
    models = httpx.get(f"{liar.base_url}/models", timeout=10)
    assert models.status_code == 200
    assert "gpt-4o-mini" in [model["id"] for model in models.json()["data"]]


# --- caps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("reads_cap", "caps", "obeyed"), [
    ("max_tokens", {"max_tokens": 5}, 5),
    ("max_tokens", {"max_completion_tokens": 5}, None),
    ("max_completion_tokens", {"max_completion_tokens": 5}, 5),
    ("max_completion_tokens", {"max_tokens": 5}, None),
    ("either", {"max_tokens": 7, "max_completion_tokens": 4}, 4),
    ("either", {"max_tokens": 4, "max_completion_tokens": 7}, 4),
    ("either", {"max_tokens": 6}, 6),
    ("none", {"max_tokens": 5, "max_completion_tokens": 5}, None),
])
def test_it_obeys_only_the_cap_field_it_is_told_to_read(
        liar: LyingUpstream, reads_cap: str, caps: dict[str, int], obeyed: int | None) -> None:
    liar.configure(reads_cap=reads_cap)
    answer = post(liar, **caps)
    produced = REPLY_TOKENS if obeyed is None else obeyed
    assert answer["choices"][0]["message"]["content"] == first_tokens(DEFAULT_REPLY, produced)
    assert answer["choices"][0]["finish_reason"] == ("stop" if obeyed is None else "length")
    assert answer["usage"]["completion_tokens"] == produced
    assert liar.sent[-1].cap == obeyed


def test_a_stream_is_cut_at_the_cap_one_token_per_chunk(liar: LyingUpstream) -> None:
    chunks = stream(liar, max_tokens=6)
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 6
    assert texts(chunks)[0] == first_tokens(DEFAULT_REPLY, 6)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_extra_tokens_run_past_the_cap_it_read(liar: LyingUpstream) -> None:
    liar.configure(extra_tokens=7)
    answer = post(liar, max_tokens=10)
    assert answer["choices"][0]["message"]["content"] == first_tokens(DEFAULT_REPLY, 17)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == liar.sent[-1].completion_tokens == 17


def test_extra_tokens_run_past_a_short_reply_with_filler(liar: LyingUpstream) -> None:
    # The reply ends before the cap: an honest model would stop there, a liar goes on.
    liar.configure(reply="Hi.", extra_tokens=20)
    content = texts(stream(liar, max_completion_tokens=5))[0]
    assert content.startswith("Hi. " + FILLER[:20])
    assert count_text_tokens(content) == liar.sent[-1].completion_tokens
    assert liar.sent[-1].completion_tokens == count_text_tokens("Hi.") + 20


def test_without_a_cap_extra_tokens_run_past_the_whole_reply(liar: LyingUpstream) -> None:
    liar.configure(extra_tokens=4, reads_cap="none")
    content = post(liar, max_tokens=3)["choices"][0]["message"]["content"]
    assert content.startswith(DEFAULT_REPLY + " Filler")
    assert count_text_tokens(content) == REPLY_TOKENS + 4


# --- usage ----------------------------------------------------------------------------------

# (prompt, completion, cached) reported for the true prompt and completion counts.
USAGE_LIES: dict[str, Callable[[int, int], tuple[Any, Any, int]]] = {
    "honest": lambda p, c: (p, c, 0),
    "zero": lambda p, c: (0, 0, 0),
    "negative": lambda p, c: (p, -5, 0),
    "string": lambda p, c: (p, "many", 0),
    "float": lambda p, c: (p, c + 0.5, 0),
    "bool": lambda p, c: (p, True, 0),
    "huge": lambda p, c: (p, 10**12, 0),
    "over": lambda p, c: (p, 10 * c, 0),
    "under": lambda p, c: (p, 1, 0),
    "prompt_huge": lambda p, c: (10**9, c, 0),
    "prompt_zero": lambda p, c: (0, c, 0),
    "cached_over_prompt": lambda p, c: (p, c, p + 100),
    "scaled": lambda p, c: (p, round(c * 1.1), 0),
}


@pytest.mark.parametrize("lie", USAGE_LIES)
def test_each_usage_lie_is_told_in_a_json_answer(liar: LyingUpstream, lie: str) -> None:
    liar.configure(usage=lie)
    usage = post(liar, max_tokens=20)["usage"]
    expected = USAGE_LIES[lie](PROMPT_TOKENS, 20)
    reported = (usage["prompt_tokens"], usage["completion_tokens"],
                usage["prompt_tokens_details"]["cached_tokens"])
    assert reported == expected
    assert type(reported[1]) is type(expected[1])  # True == 1 and 20.5 != 20, but be exact
    assert liar.sent[-1].usage == usage
    assert liar.sent[-1].completion_tokens == 20  # what went out is the truth


def test_scaled_usage_counts_like_another_tokenizer(liar: LyingUpstream) -> None:
    liar.configure(usage="scaled", usage_scale=1.1)
    assert post(liar, max_tokens=36)["usage"]["completion_tokens"] == 40


def test_missing_usage_is_never_sent_even_when_asked(liar: LyingUpstream) -> None:
    liar.configure(usage="missing")
    assert "usage" not in post(liar)
    chunks = stream(liar, stream_options={"include_usage": True})
    assert with_usage(chunks) == []
    assert texts(chunks)[0] == DEFAULT_REPLY
    assert liar.sent[-1].usage is None


def _own_chunk(chunks: list[dict[str, Any]]) -> None:
    assert with_usage(chunks) == [len(chunks) - 1]
    assert chunks[-1]["choices"] == []


def _beside_empty_delta(chunks: list[dict[str, Any]]) -> None:
    assert with_usage(chunks) == [len(chunks) - 1]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def _beside_finish(chunks: list[dict[str, Any]]) -> None:
    assert with_usage(chunks) == [len(chunks) - 1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def _beside_content(chunks: list[dict[str, Any]]) -> None:
    assert with_usage(chunks) == [len(chunks) - 2]
    assert chunks[-2]["choices"][0]["delta"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def _early(chunks: list[dict[str, Any]]) -> None:
    assert with_usage(chunks) == [0]
    assert chunks[0]["choices"] == []
    assert texts(chunks[1:])[0] == DEFAULT_REPLY


def _every_chunk(chunks: list[dict[str, Any]]) -> None:
    assert with_usage(chunks) == list(range(len(chunks)))
    counts = [chunk["usage"]["completion_tokens"] for chunk in chunks]
    assert counts[0] == 0  # the role chunk carries no token
    assert counts == sorted(counts)
    assert len(set(counts)) == REPLY_TOKENS + 1  # one more token on each content chunk


@pytest.mark.parametrize("placement", [_own_chunk, _beside_empty_delta, _beside_finish,
                                       _beside_content, _early, _every_chunk],
                         ids=lambda check: check.__name__.strip("_"))
def test_each_usage_placement_puts_usage_on_its_chunk_unasked(
        liar: LyingUpstream, placement: Callable[[list[dict[str, Any]]], None]) -> None:
    liar.configure(usage_placement=placement.__name__.strip("_"))
    chunks = stream(liar)  # no stream_options: the usage comes anyway
    placement(chunks)
    usage = chunks[with_usage(chunks)[-1]]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (PROMPT_TOKENS,
                                                                    REPLY_TOKENS)
    assert liar.sent[-1].usage == usage


# --- choices --------------------------------------------------------------------------------


def test_a_stream_of_n_choices_interleaves_them_one_choice_per_chunk(
        liar: LyingUpstream) -> None:
    liar.configure(reply="One two three.")
    chunks = [chunk for chunk in stream(liar, n=2) if chunk["choices"]]
    assert all(len(chunk["choices"]) == 1 for chunk in chunks)
    assert [chunk["choices"][0]["index"] for chunk in chunks] == [0, 1] * (len(chunks) // 2)
    assert texts(chunks) == {0: "One two three.", 1: "One two three."}
    assert liar.sent[-1].completion_tokens == 2 * count_text_tokens("One two three.")


def test_n_in_one_chunk_carries_every_choice_in_each_chunk(liar: LyingUpstream) -> None:
    liar.configure(n_in_one_chunk=True)
    chunks = [chunk for chunk in stream(liar, n=3) if chunk["choices"]]
    assert len(chunks) == 1 + REPLY_TOKENS + 1  # role, one per token, finish
    assert all([c["index"] for c in chunk["choices"]] == [0, 1, 2] for chunk in chunks)
    assert set(texts(chunks).values()) == {DEFAULT_REPLY}
    assert post(liar, n=3)["usage"]["completion_tokens"] == 3 * REPLY_TOKENS


def test_an_extra_choice_comes_with_index_n(liar: LyingUpstream) -> None:
    liar.configure(extra_choice=True)
    answer = post(liar)
    assert [choice["index"] for choice in answer["choices"]] == [0, 1]
    assert answer["usage"]["completion_tokens"] == 2 * REPLY_TOKENS  # honest: all it sent
    assert set(texts(stream(liar, n=2, max_tokens=3))) == {0, 1, 2}
    assert [choice.index for choice in liar.sent[-1].choices] == [0, 1, 2]


# --- tool calls and reasoning ---------------------------------------------------------------


def test_tool_call_arguments_follow_the_text_and_count_as_output(liar: LyingUpstream) -> None:
    liar.configure(tool_call_args=ARGS)
    message = post(liar)["choices"][0]["message"]
    assert message["content"] == DEFAULT_REPLY
    assert message["tool_calls"][0]["function"] == {"name": "lookup", "arguments": ARGS}
    chunks = stream(liar)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
             if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0]["function"] == {"name": "lookup", "arguments": ""}
    assert len(calls) == 1 + count_text_tokens(ARGS)  # the head, then one token each
    assert "".join(call["function"]["arguments"] for call in calls) == ARGS
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == REPLY_TOKENS + count_text_tokens(ARGS)


def test_the_cap_cuts_into_tool_call_arguments(liar: LyingUpstream) -> None:
    liar.configure(tool_call_args=ARGS)
    answer = post(liar, max_tokens=REPLY_TOKENS + 3)
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == (
        first_tokens(ARGS, 3))
    assert answer["choices"][0]["finish_reason"] == "length"
    assert liar.sent[-1].choices[0].tool_args == first_tokens(ARGS, 3)


def test_reasoning_comes_before_the_content_and_counts_as_output(
        liar: LyingUpstream) -> None:
    liar.configure(reasoning=THOUGHT)
    message = post(liar)["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (THOUGHT, DEFAULT_REPLY)
    chunks = stream(liar)
    kinds = [key for chunk in chunks for choice in chunk["choices"]
             for key, text in choice["delta"].items()
             if key in ("reasoning_content", "content") and text]
    assert kinds.index("reasoning_content") < kinds.index("content")
    assert kinds[-1] == "content"
    assert texts(chunks, "reasoning_content")[0] == THOUGHT
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == count_text_tokens(THOUGHT) + REPLY_TOKENS
    assert usage["completion_tokens_details"]["reasoning_tokens"] == count_text_tokens(THOUGHT)


def test_the_cap_is_spent_on_reasoning_first(liar: LyingUpstream) -> None:
    liar.configure(reasoning=THOUGHT)
    post(liar, max_tokens=3)
    choice = liar.sent[-1].choices[0]
    assert (choice.reasoning, choice.content) == (first_tokens(THOUGHT, 3), "")


# --- what it sent, slow and dying streams ---------------------------------------------------


def test_it_records_what_each_request_was_sent(liar: LyingUpstream) -> None:
    post(liar, max_tokens=5)
    liar.configure(usage="over", reads_cap="none")
    stream(liar, max_tokens=5, n=2)
    first, second = liar.sent
    assert (first.stream, first.cap, first.body["max_tokens"]) == (False, 5, 5)
    assert first.choices[0].content == first_tokens(DEFAULT_REPLY, 5)
    assert first.choices[0].finish_reason == "length"
    assert (second.stream, second.cap) == (True, None)
    assert [choice.completion_tokens for choice in second.choices] == [REPLY_TOKENS] * 2
    assert second.usage is not None
    assert second.usage["completion_tokens"] == 10 * second.completion_tokens


def test_a_dropped_stream_records_only_the_chunks_that_went_out(liar: LyingUpstream) -> None:
    liar.configure(die_after_chunks=4)
    with pytest.raises(httpx.RemoteProtocolError):
        stream(liar)
    sent = liar.sent[-1]
    assert sent.choices[0].content == first_tokens(DEFAULT_REPLY, 3)  # after the role chunk
    assert (sent.choices[0].finish_reason, sent.usage) == (None, None)
    with pytest.raises(httpx.RemoteProtocolError):
        post(liar)
    assert liar.sent[-1].choices == ()


def test_chunk_delay_paces_the_stream(liar: LyingUpstream) -> None:
    liar.configure(reply="One two three.", chunk_delay=0.03)
    started = time.monotonic()
    chunks = stream(liar)
    assert time.monotonic() - started >= 0.03 * (len(chunks) - 1)
