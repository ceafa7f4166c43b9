"""Validate a legacy completions body the way OpenAI does, naming the bad ``param``, and
parse it into the path's internal (chat) request.

The internal body is the chat form a translated worker is sent: the prompt as one user
message. A worker that speaks /v1/completions natively is sent the client's own body
instead (``proxy.dialects.completions.codec``); what only that form can say (``suffix``,
``logprobs``, several prompts in one request, ``best_of``) needs such a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.dialects.body import json_body, model_name
from proxy.dialects.chat.request import ChatRequest, _number_in, _validate_stop
from proxy.dialects.embeddings.request import Input, is_token_id, split_inputs
from proxy.ground.errors import bad_request
from proxy.ground.tokens import decode_tokens

# OpenAI's legacy API: 16 output tokens unless the client says otherwise.
DEFAULT_MAX_TOKENS = 16
MAX_N = 128
MAX_BEST_OF = 20
MAX_LOGPROBS = 5
# Sampling fields the chat form reads the same way: passed on to a translated worker.
SHARED_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed",
                 "user", "stop", "logit_bias")


@dataclass(frozen=True)
class LegacyRequest:
    chat: ChatRequest  # the internal request; ``chat.native`` is the client's own body
    prompts: list[Input]
    n: int  # choices returned per prompt
    echo: bool  # the router prepends each choice's prompt to its text
    needs_native: str | None  # the field only a worker speaking /v1/completions can take

    def prompt_text(self, index: int) -> str:
        """The prompt of choice ``index`` (choices come ``n`` per prompt, in order); token
        ids are read as o200k tokens."""
        prompt = self.prompts[min(index // self.n, len(self.prompts) - 1)]
        return prompt if isinstance(prompt, str) else decode_tokens(prompt)


def _int_in(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not is_token_id(value) or not low <= value <= high:
        raise bad_request(f"Invalid '{name}': expected an integer between {low} and {high}.",
                          param=name, code="invalid_value")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"Invalid type for '{name}': expected a boolean.", param=name,
                          code="invalid_type")
    return value


def _stream_usage(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is "
                          "enabled.", param="stream_options", code="invalid_value")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False),
                                                       bool):
        raise bad_request("Invalid 'stream_options': expected an object with a boolean "
                          "'include_usage'.", param="stream_options", code="invalid_type")
    return bool(options.get("include_usage", False))


def _needs_native(body: dict[str, Any], prompts: list[Input], n: int, best_of: int
                  ) -> str | None:
    if body.get("suffix") is not None:
        return "suffix"
    if body.get("logprobs") is not None:
        return "logprobs"
    if len(prompts) > 1:
        return "prompt"
    if best_of > n:
        return "best_of"
    return None


def parse_completions_request(raw: bytes) -> LegacyRequest:
    body = json_body(raw)
    model = model_name(body)
    # OpenAI accepts "" as a prompt (the model then starts from nothing).
    prompts = split_inputs(body.get("prompt"), "prompt", allow_empty_text=True)
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise bad_request("Invalid type for 'suffix': expected a string.", param="suffix",
                          code="invalid_type")
    max_tokens = _int_in(body, "max_tokens", 0, 2**31 - 1)
    n = _int_in(body, "n", 1, MAX_N) or 1
    best_of = _int_in(body, "best_of", 0, MAX_BEST_OF)
    best_of = n if best_of is None else best_of
    if best_of < n:
        raise bad_request(f"Invalid 'best_of': {best_of} is less than 'n' ({n}).",
                          param="best_of", code="invalid_value")
    logprobs = _int_in(body, "logprobs", 0, MAX_LOGPROBS)
    echo = _flag(body, "echo")
    if echo and logprobs is not None:
        # The router writes the echo itself (so it is never billed as output): the prompt's
        # own logprobs, which only the upstream knows, cannot come with it.
        raise bad_request("'echo' together with 'logprobs' is not supported.", param="echo",
                          code="invalid_value")
    stream = _flag(body, "stream")
    include_usage = _stream_usage(body, stream)
    if stream and best_of > n:
        raise bad_request("'best_of' cannot be used with 'stream'.", param="best_of",
                          code="invalid_value")
    _number_in(body, "temperature", 0, 2)
    _number_in(body, "top_p", 0, 1)
    _number_in(body, "presence_penalty", -2, 2)
    _number_in(body, "frequency_penalty", -2, 2)
    _validate_stop(body.get("stop"))
    for name, kind in (("seed", int), ("user", str), ("logit_bias", dict)):
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise bad_request(f"Invalid type for '{name}': expected {kind.__name__}.",
                              param=name, code="invalid_type")

    legacy_texts = [p if isinstance(p, str) else decode_tokens(p) for p in prompts]
    # One user message per prompt (and the suffix, which is prompt too): exactly what a
    # translated worker is sent when there is one prompt, and what bounds the hold's prompt
    # for a native one (the chat framing counted on top only makes the bound safer).
    messages = [{"role": "user", "content": text}
                for text in legacy_texts + ([suffix] if suffix else [])]
    chat_body: dict[str, Any] = {"model": model, "messages": messages, "n": n,
                                 "stream": stream}
    chat_body.update((name, body[name]) for name in SHARED_FIELDS
                     if body.get(name) is not None)
    if include_usage:
        chat_body["stream_options"] = {"include_usage": True}
    cap = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    chat = ChatRequest(
        body=chat_body, model=model, messages=messages, stream=stream,
        include_usage=include_usage, max_tokens=cap,
        # Every prompt gets ``best_of`` choices generated (and billed) upstream, of which
        # ``n`` come back: the hold covers them all.
        n=len(prompts) * best_of,
        cap_fields=None if max_tokens is None else {"max_tokens": max_tokens}, native=body)
    return LegacyRequest(chat=chat, prompts=prompts, n=n, echo=echo,
                         needs_native=_needs_native(body, prompts, n, best_of))
