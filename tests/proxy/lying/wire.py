"""What the lying upstream puts on the wire, and what it reads back from it for ``sent``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.ground.tokens import count_text_tokens
from tests.proxy.lying.lies import TOOL_NAME, Lies, Output
from tests.proxy.upstream import Completion
from tests.proxy.upstream import _usage as honest_usage


@dataclass(frozen=True)
class SentChoice:
    """What one choice carried on the wire."""

    index: int
    content: str = ""
    reasoning: str = ""
    tool_args: str | None = None  # None: no tool call was sent
    finish_reason: str | None = None  # None: the stream ended before it

    @property
    def completion_tokens(self) -> int:
        """Its output tokens as the router counts them (``o200k_base``, all three texts)."""
        return sum(count_text_tokens(text)
                   for text in (self.reasoning, self.content, self.tool_args or ""))


@dataclass(frozen=True)
class Sent:
    """What the server sent for one request."""

    body: dict[str, Any]  # the request it answered
    stream: bool
    cap: int | None  # the output cap it read, None if none
    choices: tuple[SentChoice, ...]  # by index; empty if it died before any
    usage: dict[str, Any] | None  # the last usage object it sent, None if none

    @property
    def completion_tokens(self) -> int:
        """Output tokens summed over choices: what honest usage reports."""
        return sum(choice.completion_tokens for choice in self.choices)


def read_back(objects: list[dict[str, Any]]) -> tuple[tuple[SentChoice, ...],
                                                      dict[str, Any] | None]:
    """The choices and the last usage carried by a ``chat.completion`` or by chunks."""
    found: dict[int, dict[str, Any]] = {}
    usage = None
    for obj in objects:
        for choice in obj["choices"]:
            said = choice.get("delta") or choice.get("message") or {}
            got = found.setdefault(choice["index"], {"content": "", "reasoning": ""})
            got["content"] += said.get("content") or ""
            got["reasoning"] += said.get("reasoning_content") or ""
            for call in said.get("tool_calls") or ():
                got["tool_args"] = got.get("tool_args", "") + call["function"]["arguments"]
            if choice.get("finish_reason"):
                got["finish_reason"] = choice["finish_reason"]
        if obj.get("usage") is not None:
            usage = obj["usage"]
    return tuple(SentChoice(index=i, **got) for i, got in sorted(found.items())), usage


def lied_usage(lies: Lies, prompt: int, objects: list[dict[str, Any]]
               ) -> dict[str, Any] | None:
    """The usage this server reports for the output ``objects`` carry."""
    if lies.usage == "missing":
        return None
    choices, _ = read_back(objects)
    completion = sum(choice.completion_tokens for choice in choices)
    # The honest server's usage object for the truth, then the lie written over it.
    usage = honest_usage(Completion(pieces=[], finish_reason="", prompt_tokens=prompt,
                                    completion_tokens=completion), 1,
                         prompt + 100 if lies.usage == "cached_over_prompt" else 0)
    usage["completion_tokens_details"]["reasoning_tokens"] = sum(
        count_text_tokens(choice.reasoning) for choice in choices)
    prompt = {"zero": 0, "prompt_zero": 0, "prompt_huge": 10**9}.get(lies.usage, prompt)
    reported: Any = {"zero": 0, "negative": -5, "string": "many", "float": completion + 0.5,
                     "bool": True, "huge": 10**12, "over": completion * 10, "under": 1,
                     "scaled": round(completion * lies.usage_scale)
                     }.get(lies.usage, completion)
    usage.update(prompt_tokens=prompt, completion_tokens=reported)
    # total_tokens agrees with the lie when it can; for "many" and true it stays the truth.
    if isinstance(reported, int | float) and not isinstance(reported, bool):
        usage["total_tokens"] = prompt + reported
    return usage


def _steps(output: Output, call_id: str) -> list[tuple[dict[str, Any], str | None]]:
    """One choice's stream: (delta, finish_reason) per chunk, one token per delta."""
    steps: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None)]
    steps += [({"reasoning_content": piece}, None) for piece in output.reasoning]
    steps += [({"content": piece}, None) for piece in output.content]
    if output.tool_args is not None:
        def call(arguments: str, **head: Any) -> dict[str, Any]:
            return {"tool_calls": [{"index": 0, **head, "function": {
                **({"name": TOOL_NAME} if head else {}), "arguments": arguments}}]}

        steps.append((call("", id=call_id, type="function"), None))
        steps += [(call(piece), None) for piece in output.tool_args]
    steps.append(({}, output.finish_reason))
    return steps


def build_answer(output: Output, indexes: range, head: dict[str, Any], call_id: str
                 ) -> dict[str, Any]:
    """The ``chat.completion``, without usage."""
    message: dict[str, Any] = {"role": "assistant", "refusal": None,
                               "content": "".join(output.content)}
    if output.reasoning:
        message["reasoning_content"] = "".join(output.reasoning)
    if output.tool_args is not None:
        message["content"] = message["content"] or None  # as OpenAI sends a bare call
        message["tool_calls"] = [{"id": call_id, "type": "function", "function": {
            "name": TOOL_NAME, "arguments": "".join(output.tool_args)}}]
    return {**head, "object": "chat.completion", "choices": [
        {"index": i, "message": message, "logprobs": None,
         "finish_reason": output.finish_reason} for i in indexes]}


def _chunk(head: dict[str, Any], choices: list[dict[str, Any]], **extra: Any
           ) -> dict[str, Any]:
    return {**head, "object": "chat.completion.chunk", "choices": choices, **extra}


def build_chunks(lies: Lies, output: Output, indexes: range, head: dict[str, Any],
                 call_id: str) -> list[dict[str, Any]]:
    """The stream's chunks, without usage."""
    steps = _steps(output, call_id)
    if lies.n_in_one_chunk:
        rows = [[(i, step) for i in indexes] for step in steps]
    else:  # OpenAI: one choice per chunk, the choices taking turns token by token
        rows = [[(i, step)] for step in steps for i in indexes]
    return [_chunk(head, [{"index": i, "delta": delta, "logprobs": None,
                           "finish_reason": finish} for i, (delta, finish) in row])
            for row in rows]


def place_usage(lies: Lies, chunks: list[dict[str, Any]], head: dict[str, Any],
                usage_of: Callable[[list[dict[str, Any]]], dict[str, Any] | None]
                ) -> list[dict[str, Any]]:
    """The chunks with the usage ``usage_of`` reports put where ``usage_placement`` says."""
    usage = usage_of(chunks)
    if usage is None:
        return chunks
    match lies.usage_placement:
        case "own_chunk":  # OpenAI
            return [*chunks, _chunk(head, [], usage=usage)]
        case "beside_empty_delta":  # LiteLLM's proxy, after the finish chunk
            return [*chunks, _chunk(head, [{"index": 0, "delta": {}}], usage=usage)]
        case "beside_finish":  # llama.cpp: the (last) chunk with a finish_reason
            chunks[-1]["usage"] = usage
        case "beside_content":
            unfinished = [chunk for chunk in chunks
                          if not any(c["finish_reason"] for c in chunk["choices"])]
            unfinished[-1]["usage"] = usage
        case "early":
            return [_chunk(head, [], usage=usage), *chunks]
        case "every_chunk":  # cumulative: each chunk counts everything up to itself
            for sent, chunk in enumerate(chunks, start=1):
                chunk["usage"] = usage_of(chunks[:sent])
    return chunks
