"""Chat Completions is the path's own form: its answers and chunks go out as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from django.http import HttpResponse

from billing.models import UsageRecord
from proxy.ground.errors import ApiError
from proxy.ground.responses import error_response

if TYPE_CHECKING:
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class ChatStream:
    __slots__ = ("_include_usage", "_model")

    def __init__(self, call: Call) -> None:
        self._model = call.chat.model
        self._include_usage = call.chat.include_usage

    def opening(self) -> list[bytes]:
        return []

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        chunk["model"] = self._model
        return [sse(chunk)]

    def aside(self, chunk: dict[str, Any]) -> list[bytes]:
        chunk["model"] = self._model
        return [sse(chunk)]

    async def closing(self, call: Call, usage: dict[str, Any], charged: int,
                      last: dict[str, Any]) -> list[bytes]:
        if not self._include_usage:
            return [DONE]
        return [sse({"id": last.get("id"), "object": "chat.completion.chunk",
                     "created": last.get("created"), "model": self._model, "choices": [],
                     "usage": usage}), DONE]

    def failure(self, error: ApiError) -> list[bytes]:
        return [sse(error.body())]


class ChatDialect:
    endpoint = UsageRecord.Endpoint.CHAT
    path = "/v1/chat/completions"

    def serves(self, target: UpstreamTarget) -> bool:
        return True

    def native(self, target: UpstreamTarget) -> None:
        return None  # every provider adapter speaks it: there is nothing to translate

    async def render(self, call: Call, answer: dict[str, Any]) -> dict[str, Any]:
        return answer

    def stream(self, call: Call) -> ChatStream:
        return ChatStream(call)

    def error_response(self, error: ApiError) -> HttpResponse:
        return error_response(error)


CHAT = ChatDialect()
