"""Legacy completions for their client: ``text_completion`` objects and chunks, from the
path's internal answers.

Each choice's text is the internal one (what the meter let through); the upstream's own
``logprobs`` go with it only where the text is the upstream's whole (not cut at the cap).
``echo`` is done here, for native and translated workers alike: the choice's prompt goes
before its text (the first chunk of it, in a stream), so the echo is never metered or
billed as output. A prompt of token ids is echoed as their o200k text.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from django.http import HttpResponse

from billing.models import UsageRecord
from proxy.dialects.base import NATIVE
from proxy.dialects.chat.render import DONE, sse
from proxy.dialects.completions.codec import CODEC, CompletionsCodec
from proxy.dialects.completions.request import LegacyRequest
from proxy.ground.errors import ApiError
from proxy.ground.responses import error_response

if TYPE_CHECKING:
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget

FINISH_REASONS = frozenset({"stop", "length", "content_filter"})


def completion_id(internal: object) -> str:
    """A ``cmpl-`` id: the upstream's own, or the translated answer's re-prefixed."""
    text = internal if isinstance(internal, str) and internal else uuid.uuid4().hex
    if text.startswith("cmpl-"):
        return text
    return "cmpl-" + text.removeprefix("chatcmpl-")


def _finish(reason: object, *, final: bool) -> str | None:
    if reason is None:
        return "stop" if final else None
    # A translated worker's "tool_calls" and the like: the legacy API knows only these.
    return reason if reason in FINISH_REASONS else "stop"


def _raw_choices(internal: dict[str, Any]) -> dict[int, dict[str, Any]]:
    raw = internal.get(NATIVE)
    choices = raw.get("choices") if isinstance(raw, dict) else None
    return {c.get("index", i): c for i, c in enumerate(choices or ()) if isinstance(c, dict)}


def _choice(choice: dict[str, Any], key: str, raw: dict[int, dict[str, Any]],
            *, final: bool) -> dict[str, Any]:
    index = choice.get("index", 0)
    text = str((choice.get(key) or {}).get("content") or "")
    native = raw.get(index) or {}
    logprobs = native.get("logprobs") if native.get("text") == text else None
    return {"text": text, "index": index, "logprobs": logprobs,
            "finish_reason": _finish(choice.get("finish_reason"), final=final)}


class CompletionsStream:
    __slots__ = ("_created", "_echoed", "_id", "_include_usage", "_legacy", "_model")

    def __init__(self, call: Call, legacy: LegacyRequest) -> None:
        self._model = call.chat.model
        self._include_usage = call.chat.include_usage
        self._legacy = legacy
        self._echoed: set[int] = set()
        self._id: str | None = None
        self._created = int(time.time())

    def _envelope(self, chunk: dict[str, Any], choices: list[dict[str, Any]]
                  ) -> dict[str, Any]:
        if self._id is None:  # one id for the whole stream
            self._id = completion_id(chunk.get("id"))
            if isinstance(chunk.get("created"), int):
                self._created = chunk["created"]
        return {"id": self._id, "object": "text_completion", "created": self._created,
                "model": self._model, "choices": choices}

    def opening(self) -> list[bytes]:
        return []

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        raw = _raw_choices(chunk)
        choices = []
        for internal in chunk["choices"]:
            choice = _choice(internal, "delta", raw, final=False)
            if self._legacy.echo and choice["index"] not in self._echoed:
                self._echoed.add(choice["index"])
                choice["text"] = self._legacy.prompt_text(choice["index"]) + choice["text"]
            # A translated worker's opening chunk (its role, no text) says nothing here.
            if choice["text"] or choice["finish_reason"] or choice["logprobs"]:
                choices.append(choice)
        return [sse(self._envelope(chunk, choices))] if choices else []

    def aside(self, chunk: dict[str, Any]) -> list[bytes]:
        return []  # nothing in the legacy form carries a chunk without choices

    async def closing(self, call: Call, usage: dict[str, Any], charged: int,
                      last: dict[str, Any]) -> list[bytes]:
        if not self._include_usage:
            return [DONE]
        final = self._envelope(last, [])
        final["usage"] = usage
        return [sse(final), DONE]

    def failure(self, error: ApiError) -> list[bytes]:
        return [sse(error.body())]


class CompletionsDialect:
    """One per request: rendering needs its prompts (for ``echo``), and which workers may
    take it depends on what it asks (``LegacyRequest.needs_native``)."""

    endpoint = UsageRecord.Endpoint.COMPLETIONS
    path = "/v1/completions"

    def __init__(self, legacy: LegacyRequest) -> None:
        self.legacy = legacy

    def serves(self, target: UpstreamTarget) -> bool:
        return self.legacy.needs_native is None or self.native(target) is not None

    def native(self, target: UpstreamTarget) -> CompletionsCodec | None:
        # The mock answers chat only: it is always translated to.
        if target.kind == "mock" or "completions" not in target.dialects:
            return None
        return CODEC

    async def render(self, call: Call, answer: dict[str, Any]) -> dict[str, Any]:
        raw = _raw_choices(answer)
        choices = []
        for internal in answer["choices"]:
            choice = _choice(internal, "message", raw, final=True)
            if self.legacy.echo:
                choice["text"] = self.legacy.prompt_text(choice["index"]) + choice["text"]
            choices.append(choice)
        created = answer.get("created")
        return {"id": completion_id(answer.get("id")), "object": "text_completion",
                "created": created if isinstance(created, int) else int(time.time()),
                "model": answer["model"], "choices": choices, "usage": answer["usage"]}

    def stream(self, call: Call) -> CompletionsStream:
        return CompletionsStream(call, self.legacy)

    def error_response(self, error: ApiError) -> HttpResponse:
        return error_response(error)
