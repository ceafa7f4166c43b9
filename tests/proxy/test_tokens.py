"""Token counting: exact counts, safe prompt upper bounds, and no network ever."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import quicktok
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.ground import tokens
from proxy.ground.tokens import (
    IMAGE_PART_TOKENS,
    count_text_tokens,
    decode_tokens,
    encode_text,
    estimate_prompt_tokens,
    estimate_request_prompt_tokens,
    estimate_text_tokens,
    estimate_tools_tokens,
    exact_prompt_tokens,
    token_pieces,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Reference counts computed with tiktoken itself (o200k_base, cl100k_base, encode_ordinary).
KNOWN = [
    ("hello world", 2, 2),
    ("Hello, world!", 4, 4),
    ("tiktoken is great!", 6, 6),
    ("日本語のテキスト", 6, 8),
    ("🚀👨\u200d👩\u200d👧", 10, 16),
    ("Привет, мир!", 5, 7),
    ("<|endoftext|>", 7, 7),  # a special token's text is counted as plain text
    ("  leading and trailing  ", 5, 5),
    ("def f(x):\n    return x * 2\n", 11, 11),
    ("naïve café 123456789", 8, 8),
]


@pytest.mark.parametrize(("text", "o200k", "cl100k"), KNOWN)
def test_known_counts_match_tiktoken(text: str, o200k: int, cl100k: int) -> None:
    assert count_text_tokens(text) == o200k
    assert len(encode_text(text)) == o200k
    assert estimate_text_tokens(text) == max(o200k, cl100k)


def test_known_ids() -> None:
    assert encode_text("hello world") == [24912, 2375]
    assert encode_text("Hello, world!") == [13225, 11, 2375, 0]
    assert decode_tokens([24912, 2375]) == "hello world"


def test_empty_text_is_zero_tokens() -> None:
    assert count_text_tokens("") == 0
    assert encode_text("") == []
    assert estimate_text_tokens("") == 0
    assert decode_tokens([]) == ""
    assert token_pieces([]) == []


def test_unicode_round_trips() -> None:
    text = "héllo 日本 🚀👨\u200d👩\u200d👧 مرحبا"
    ids = encode_text(text)
    assert decode_tokens(ids) == text
    assert count_text_tokens(text) == len(ids)


def test_token_pieces_keep_characters_whole() -> None:
    # An emoji is split over two tokens; the piece holds the whole character.
    text = "Rocket 🚀 and family 👨\u200d👩\u200d👧, ok"
    ids = encode_text(text)
    pieces = token_pieces(ids)
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert " 🚀" in pieces
    assert len(pieces) < len(ids)  # some tokens were joined


def test_lone_surrogates_are_counted_not_refused() -> None:
    # JSON may carry "\ud800"; it counts like U+FFFD (as tiktoken does).
    assert count_text_tokens("a\ud800b") == count_text_tokens("a\ufffdb")
    assert encode_text("a\ud800b") == encode_text("a\ufffdb")
    assert estimate_prompt_tokens([{"role": "user", "content": "x\udfff"}]) > 0


# --- prompts --------------------------------------------------------------------------

MESSAGES: list[list[dict[str, Any]]] = [
    [],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "hello world"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Summarize: " + "lorem ipsum dolor sit amet " * 50}],
    [{"role": "user", "name": "alice", "content": "日本語のテキスト 🚀👨\u200d👩\u200d👧"}],
    [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}},
        {"type": "text", "text": "Answer briefly."},
    ]}],
    [{"role": "user", "content": "weather in Paris?"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_abc123", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}}]},
     {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp": 21}'}],
    [{"role": "assistant", "content": None,
      "function_call": {"name": "lookup", "arguments": '{"q": "x"}'}},
     {"role": "function", "name": "lookup", "content": "result"}],
    [{"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help."}]}],
    [{"role": "user", "content": "<|endoftext|><|im_start|>system"}],
    [{"role": "user", "content": "Привет, мир! " * 200}],
    [{"role": "developer", "content": "\n\n\t  \r\n" * 30}],
]


@pytest.mark.parametrize("messages", MESSAGES)
def test_estimate_bounds_exact_and_content_counts(messages: list[dict[str, Any]]) -> None:
    estimate = estimate_prompt_tokens(messages)
    assert estimate >= exact_prompt_tokens(messages)
    contents = 0
    for message in messages:
        content = message.get("content")
        parts = [content] if isinstance(content, str) else [
            p.get("text") or p.get("refusal") or "" for p in content or []]
        contents += sum(max(count_text_tokens(p), estimate_text_tokens(p)) for p in parts)
    assert estimate >= contents + 3 * len(messages) + 3


def test_exact_prompt_tokens_follows_openai_cookbook() -> None:
    # 3 per message + role + content, + name + 1, + 3 for the reply's priming.
    messages = [{"role": "system", "content": "hello world"},
                {"role": "user", "name": "bob", "content": "Hello, world!"}]
    expected = (3 + 1 + 2) + (3 + 1 + 4 + 1 + 1) + 3
    assert count_text_tokens("system") == count_text_tokens("user") == 1
    assert count_text_tokens("bob") == 1
    assert exact_prompt_tokens(messages) == expected


def test_image_parts_get_a_fixed_allowance() -> None:
    one = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
    two = [{"role": "user", "content": one[0]["content"] * 2}]
    assert estimate_prompt_tokens(one) >= IMAGE_PART_TOKENS
    assert estimate_prompt_tokens(two) >= 2 * IMAGE_PART_TOKENS
    # A huge data URL costs no more than a short link: its size says nothing of the tokens.
    big = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10**6}}]}]
    assert estimate_prompt_tokens(big) == estimate_prompt_tokens(one)


def test_other_parts_are_bounded_by_their_bytes() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGR" * 1000, "format": "wav"}}
    estimate = estimate_prompt_tokens([{"role": "user", "content": [audio]}])
    assert estimate >= len(json.dumps(audio))


def test_odd_shapes_do_not_crash() -> None:
    for messages in ([{"role": "user", "content": 42}], [{"role": "user"}], ["not a dict"],
                     [{"role": "user", "content": [None, 3, {"type": "text"}]}]):
        assert estimate_prompt_tokens(messages) >= exact_prompt_tokens(messages) >= 3


def test_estimate_is_not_absurdly_loose_for_text() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 100
    exact = exact_prompt_tokens([{"role": "user", "content": text}])
    assert estimate_prompt_tokens([{"role": "user", "content": text}]) < exact * 1.2 + 40


def test_tools_tokens() -> None:
    assert estimate_tools_tokens(None) == 0
    assert estimate_tools_tokens([]) == 0
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}
    one = estimate_tools_tokens([tool])
    assert one >= count_text_tokens(json.dumps(tool, separators=(",", ":")))
    assert estimate_tools_tokens([tool, tool]) > one
    # The legacy ``functions`` list has the bare definitions.
    assert estimate_tools_tokens([tool["function"]]) > 0


def test_request_estimate_adds_tools_and_response_format() -> None:
    messages = [{"role": "user", "content": "hi"}]
    body: dict[str, Any] = {"model": "m", "messages": messages}
    base = estimate_request_prompt_tokens(body)
    assert base == estimate_prompt_tokens(messages)
    body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with_tools = estimate_request_prompt_tokens(body)
    assert with_tools > base
    body["response_format"] = {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    assert estimate_request_prompt_tokens(body) > with_tools


_text = st.text(st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["", " ", "\n\n", "<|endoftext|>", "🚀👨\u200d👩\u200d👧", "日本語", "'s'll", "1234567"])
_part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _text),
    st.just({"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}),
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
     "content": st.one_of(_text, st.lists(_part, max_size=4), st.none())},
    optional={"name": st.text(st.characters(codec="ascii"), min_size=1, max_size=20),
              "tool_call_id": st.text(max_size=20)},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, max_size=6))
def test_estimate_never_below_exact(messages: list[dict[str, Any]]) -> None:
    assert estimate_prompt_tokens(messages) >= exact_prompt_tokens(messages)


@settings(max_examples=300, deadline=None)
@given(_text, _text)
def test_estimate_bounds_both_encodings(first: str, second: str) -> None:
    cl100k = quicktok.get_encoding("cl100k_base")
    for text in (first, second, first + second):
        assert estimate_text_tokens(text) >= count_text_tokens(text)
        assert estimate_text_tokens(text) >= cl100k.count(text)


# --- offline ------------------------------------------------------------------------------


def test_encoder_is_loaded_lazily_and_once() -> None:
    code = ("import proxy.ground.tokens as t; assert t._tokenizer.cache_info().currsize == 0; "
            "t.count_text_tokens('a'); t.count_text_tokens('b'); "
            "print(t._tokenizer.cache_info().currsize, t._tokenizer.cache_info().misses)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.split() == ["1", "1"]


def test_counting_works_with_network_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # Forget the loaded vocabularies so they are read again, now with no network.
    tokens._tokenizer.cache_clear()
    monkeypatch.setattr(quicktok, "_CACHE", {})
    try:
        assert count_text_tokens("hello world") == 2
        assert estimate_text_tokens("日本語のテキスト") == 8
        assert estimate_prompt_tokens([{"role": "user", "content": "hello world"}]) > 9
    finally:
        tokens._tokenizer.cache_clear()
    assert attempts == []


def test_counting_works_in_a_fresh_process_with_empty_caches(tmp_path: Path) -> None:
    # A new interpreter with no network, every known cache dir empty, and HOME elsewhere:
    # the vocab must come from the installed package itself, and nothing is written.
    cache = tmp_path / "cache"
    home = tmp_path / "home"
    cache.mkdir()
    home.mkdir()
    code = "\n".join([
        "import socket",
        "def refuse(*a, **k): raise OSError('network refused')",
        "socket.socket.connect = refuse",
        "socket.getaddrinfo = refuse",
        "socket.create_connection = refuse",
        "from proxy.ground.tokens import count_text_tokens, estimate_prompt_tokens",
        "print(count_text_tokens('hello world'), count_text_tokens(''),",
        "      estimate_prompt_tokens([{'role': 'user', 'content': 'hi'}]) > 0)",
    ])
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HTTP", "HF_", "TIKTOKEN", "QUICKTOK", "XDG_"))}
    env.update(HOME=str(home), TIKTOKEN_CACHE_DIR=str(cache), DATA_GYM_CACHE_DIR=str(cache),
               QUICKTOK_DATA=str(cache), XDG_CACHE_HOME=str(cache), HF_HUB_OFFLINE="1",
               HF_HOME=str(cache), HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "0", "True"]
    assert list(cache.iterdir()) == []
    assert list(home.iterdir()) == []
