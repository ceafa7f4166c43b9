"""Token counting that works fully offline.

The tokenizer is ``quicktok`` (PyPI ``quicktok-v1``): an exact byte-level BPE encoder whose
wheel ships the ``cl100k_base`` and ``o200k_base`` vocabularies as package data, so nothing
is downloaded at run time (``tiktoken`` fetches its vocab files on first use, which this
machine and CI cannot do). Its ids match tiktoken's; it is a few times faster.

Two kinds of numbers come out of here:

* exact counts (``count_text_tokens``, ``encode_text``, ``exact_prompt_tokens``) with
  ``o200k_base``, the encoding of current OpenAI models: used to charge the completion tokens
  a cut-off stream actually produced, and by the mock upstream to report true usage;
* safe upper bounds (``estimate_*``) of what an OpenAI-style upstream reports as
  ``prompt_tokens``, used to reserve money before the call. They take the larger of the
  ``o200k_base`` and ``cl100k_base`` counts (older models and many open models tokenize
  more coarsely than o200k, especially non-English text), add the chat format's overhead
  generously, then a safety margin. Over-reserving only holds money for a moment;
  under-reserving would let a request cost more than its hold.

The vocabularies take about 1.2 s (o200k) and 0.5 s (cl100k) to load, once per process and
only when first needed (not at import, so management commands don't pay it). Call
``preload()`` at server start-up so the first request doesn't block its event loop.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import orjson
import quicktok

# The encoding whose counts are "exact" here: GPT-4o, GPT-4.1, o-series, GPT-5.
ENCODING = "o200k_base"
# Encodings whose maximum bounds the prompt estimate (cl100k: GPT-4, GPT-3.5, Llama-3-like).
ESTIMATE_ENCODINGS: tuple[str, ...] = ("o200k_base", "cl100k_base")

# OpenAI's chat format wraps each message as <|start|>role<|message|>content<|end|>: the
# cookbook counts 3 tokens per message (4 for older models) plus 1 for a ``name``, and 3 for
# the priming of the reply (<|start|>assistant<|message|>).
EXACT_TOKENS_PER_MESSAGE = 3
EXACT_TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# The estimate takes the older, larger per-message figure.
ESTIMATE_TOKENS_PER_MESSAGE = 4
# Each tool call is rendered with its function name, an id and some framing tokens.
TOOL_CALL_OVERHEAD_TOKENS = 10
# Tool definitions are rendered as a TypeScript-like namespace: a fixed wrapper plus some
# framing per function; the JSON of a definition is already longer than its rendering.
TOOLS_WRAPPER_TOKENS = 16
TOOL_DEFINITION_OVERHEAD_TOKENS = 12
# An image costs what its size and ``detail`` say, which we can't know without fetching it.
# The largest high-detail image is 85 + 170 * 8 tiles = 1445 tokens on GPT-4o, and at most
# 1536 patches * 2.46 = 3779 on the patch-based models (GPT-4.1-nano). 4000 covers them all
# except gpt-4o-mini, which reports images ~33x inflated (up to ~48k tokens per image).
IMAGE_PART_TOKENS = 4000
# A final margin over the sum, in percent plus a constant.
SAFETY_MARGIN_PERCENT = 5
SAFETY_MARGIN_TOKENS = 16

_load_lock = threading.Lock()


@cache
def _tokenizer(name: str) -> quicktok.Tokenizer:
    # ``cache`` alone would let two threads load the same vocab at once; the lock makes the
    # second wait for the first (quicktok keeps its own cache, so it then returns at once).
    with _load_lock:
        return quicktok.get_encoding(name)


def preload() -> None:
    """Load every vocabulary this module uses (about 1.7 s), e.g. when a server starts."""
    for name in {ENCODING, *ESTIMATE_ENCODINGS}:
        _tokenizer(name)


def _without_lone_surrogates(text: str) -> str:
    # JSON may carry unpaired "\ud800" escapes; they are not encodable as UTF-8, and the
    # tokenizer refuses them. Replace each with U+FFFD, as tiktoken does.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _count(name: str, text: str) -> int:
    if not text:
        return 0
    tokenizer = _tokenizer(name)
    try:
        return tokenizer.count(text)  # ordinary text: "<|endoftext|>" is not a special here
    except TypeError:
        # quicktok's binding raises TypeError for a str it cannot convert to UTF-8.
        return tokenizer.count(_without_lone_surrogates(text))


def count_text_tokens(text: str) -> int:
    """The exact number of ``o200k_base`` tokens of ``text`` (special tokens as plain text)."""
    return _count(ENCODING, text)


def encode_text(text: str) -> list[int]:
    """The ``o200k_base`` token ids of ``text`` (special tokens as plain text)."""
    if not text:
        return []
    tokenizer = _tokenizer(ENCODING)
    try:
        return list(tokenizer.encode_ordinary(text))
    except TypeError:
        return list(tokenizer.encode_ordinary(_without_lone_surrogates(text)))


def decode_tokens(tokens: Iterable[int]) -> str:
    """The text of ``o200k_base`` token ids; bytes that are not whole UTF-8 become U+FFFD."""
    return _tokenizer(ENCODING).decode_bytes(list(tokens)).decode("utf-8", "replace")


def text_of_tokens(tokens: list[int]) -> str:
    """The text of ``o200k_base`` token ids, leaving out a character cut off at the end (a
    token may hold only part of one): the start of the text those tokens came from."""
    return _tokenizer(ENCODING).decode_bytes(tokens).decode("utf-8", "ignore")


def token_pieces(tokens: Iterable[int]) -> list[str]:
    """The text of each token, for streaming one token per chunk.

    A token may hold only part of a UTF-8 character (an emoji is often two tokens), so such
    tokens are joined with the next ones until the bytes decode: each piece is valid text
    and ``"".join(pieces) == decode_tokens(tokens)`` for the tokens of any real text.
    """
    tokenizer = _tokenizer(ENCODING)
    pieces: list[str] = []
    pending = b""
    for token in tokens:
        pending += tokenizer.decode_single_token_bytes(token)
        try:
            pieces.append(pending.decode("utf-8"))
        except UnicodeDecodeError:
            if len(pending) < 8:  # a UTF-8 character is at most 4 bytes: wait for the rest
                continue
            pieces.append(pending.decode("utf-8", "replace"))
        pending = b""
    if pending:
        pieces.append(pending.decode("utf-8", "replace"))
    return pieces


# --- Exact prompt count: what an OpenAI-style upstream reports --------------------------


def _content_texts(content: Any) -> list[str]:
    """The texts of a message ``content``: a string, or the text and refusal parts of a list.

    Parts are counted one by one (not joined) so that the estimate, which bounds each part,
    bounds their sum term by term.
    """
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("text", "refusal") and isinstance(part.get(kind), str):
                texts.append(part[kind])
    return texts


def exact_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """``prompt_tokens`` as OpenAI's cookbook computes it for chat messages.

    Per message 3 tokens, the role, the text of the content, the name (+1), tool calls'
    function names and arguments and a tool message's ``tool_call_id``; then 3 for the
    reply. Images and other non-text parts count nothing. This is the number the mock and
    test upstreams report; ``estimate_prompt_tokens`` is never below it.
    """
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += EXACT_TOKENS_PER_MESSAGE
        total += count_text_tokens(_str(message.get("role")))
        total += sum(count_text_tokens(text) for text in _content_texts(message.get("content")))
        name = message.get("name")
        if isinstance(name, str) and name:
            total += count_text_tokens(name) + EXACT_TOKENS_PER_NAME
        for call in _tool_calls(message):
            total += count_text_tokens(call[0]) + count_text_tokens(call[1])
        total += count_text_tokens(_str(message.get("tool_call_id")))
    return total


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _tool_calls(message: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(function name, arguments, id) of each tool call, and of a legacy ``function_call``."""
    calls: list[tuple[str, str, str]] = []
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if not isinstance(call, dict):
                continue
            function = call.get("function")
            if not isinstance(function, dict):
                function = call.get("custom") if isinstance(call.get("custom"), dict) else {}
            calls.append((_str(function.get("name")),
                          _str(function.get("arguments")) or _str(function.get("input")),
                          _str(call.get("id"))))
    function_call = message.get("function_call")
    if isinstance(function_call, dict):
        calls.append((_str(function_call.get("name")), _str(function_call.get("arguments")),
                      ""))
    return calls


# --- Upper bounds: what to reserve money for ------------------------------------------


def estimate_text_tokens(text: str) -> int:
    """An upper bound of the tokens of ``text``: the largest count among the encodings."""
    if not text:
        return 0
    return max(_count(name, text) for name in ESTIMATE_ENCODINGS)


def _json_bytes(value: Any) -> int:
    # Any byte-level BPE token is at least one byte, so a UTF-8 length bounds every
    # such encoding without running a tokenizer over what may be megabytes of base64.
    try:
        return len(orjson.dumps(value, default=str))
    except (TypeError, orjson.JSONEncodeError):
        return len(str(value).encode("utf-8", "surrogatepass"))


def _estimate_part(part: Any) -> int:
    if not isinstance(part, dict):
        return _json_bytes(part)
    kind = part.get("type")
    if kind in ("text", "refusal") and isinstance(part.get(kind), str):
        return estimate_text_tokens(part[kind])
    if kind in ("image_url", "input_image", "image"):
        return IMAGE_PART_TOKENS
    # Audio, files and anything newer: their serialized length (a base64 payload is far
    # longer in bytes than the audio or document is in tokens).
    return _json_bytes(part)


def _estimate_content(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, list):
        return sum(_estimate_part(part) for part in content)
    return _json_bytes(content)


def _with_margin(tokens: int) -> int:
    return math.ceil(tokens * (100 + SAFETY_MARGIN_PERCENT) / 100) + SAFETY_MARGIN_TOKENS


# The roles are a handful of short strings: counting each once saves time on the hot path.
_ROLE_BOUNDS: dict[str, int] = {}


def _estimate_role(role: Any) -> int:
    if not isinstance(role, str):
        return 0
    bound = _ROLE_BOUNDS.get(role)
    if bound is None:
        bound = estimate_text_tokens(role)
        if len(_ROLE_BOUNDS) < 64:  # only the usual roles stay; odd ones are just counted
            _ROLE_BOUNDS[role] = bound
    return bound


def _estimate_messages_raw(messages: Iterable[Any]) -> int:
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += ESTIMATE_TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            total += _json_bytes(message)
            continue
        total += _estimate_role(message.get("role"))
        total += _estimate_content(message.get("content"))
        name = message.get("name")
        if isinstance(name, str) and name:
            total += estimate_text_tokens(name) + EXACT_TOKENS_PER_NAME
        if "tool_calls" in message or "function_call" in message:
            for function_name, arguments, call_id in _tool_calls(message):
                total += (TOOL_CALL_OVERHEAD_TOKENS + estimate_text_tokens(function_name)
                          + estimate_text_tokens(arguments) + estimate_text_tokens(call_id))
        if "tool_call_id" in message:
            total += estimate_text_tokens(_str(message["tool_call_id"]))
        if "refusal" in message:  # an assistant message's refusal text
            total += estimate_text_tokens(_str(message["refusal"]))
        audio = message.get("audio")
        if isinstance(audio, dict):  # the id of earlier audio output
            total += estimate_text_tokens(_str(audio.get("id")))
    return total


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A safe upper bound of the ``prompt_tokens`` an upstream reports for ``messages``.

    Counts the content (text, text parts, ``IMAGE_PART_TOKENS`` per image part, the
    serialized length of any other part), role, name, tool calls and tool call ids, the
    chat format's overhead and the reply's priming, then adds a margin. Tool definitions
    are counted separately by ``estimate_tools_tokens``. Never below ``exact_prompt_tokens``.
    """
    return _with_margin(_estimate_messages_raw(messages or []))


def estimate_tools_tokens(tools: list[dict[str, Any]] | None) -> int:
    """A safe upper bound of the prompt tokens that tool definitions add.

    Takes ``tools`` (``[{"type": "function", "function": {...}}]``) or the legacy
    ``functions`` list. Each definition is counted as its compact JSON, which is longer than
    the TypeScript-like text OpenAI renders from it, plus framing; 0 for none.
    """
    if not tools:
        return 0
    if not isinstance(tools, list):
        return _with_margin(TOOLS_WRAPPER_TOKENS + _json_bytes(tools))
    total = TOOLS_WRAPPER_TOKENS
    for tool in tools:
        total += TOOL_DEFINITION_OVERHEAD_TOKENS
        try:
            text = orjson.dumps(tool).decode("utf-8")
        except (TypeError, orjson.JSONEncodeError):
            total += _json_bytes(tool)
            continue
        total += estimate_text_tokens(text)
    return _with_margin(total)


def estimate_request_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A safe upper bound of the prompt tokens of a whole chat-completions body.

    Messages, tool (or legacy function) definitions, and a ``response_format`` JSON schema,
    which structured outputs also put into the prompt.
    """
    total = estimate_prompt_tokens(body.get("messages") or [])
    total += estimate_tools_tokens(body.get("tools"))
    total += estimate_tools_tokens(body.get("functions"))
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        total += estimate_tools_tokens([response_format.get("json_schema")])
    return total
