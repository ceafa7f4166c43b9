"""Anthropic's Messages API as a dialect of the one path: its ``message`` answers, its
errors, and (``stream``) its event stream.

An answer from an Anthropic worker spoken to natively is the upstream's own message, with
the client's model name and the usage that was charged; any other answer (translated, or
cut by the meter at the router's cap) is built from the internal ``chat.completion``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpResponse

from billing.models import UsageRecord
from proxy.dialects.base import NATIVE
from proxy.dialects.messages.errors import anthropic_error_response
from proxy.dialects.messages.native import CODEC, MessagesCodec
from proxy.dialects.messages.shape import (
    UPSTREAM_CAPPED,
    anthropic_usage,
    content_from,
    message_id,
    stop_reason,
    wants_thinking,
)
from proxy.dialects.messages.stream import MessagesStream
from proxy.ground.errors import ApiError

if TYPE_CHECKING:
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget

class MessagesDialect:
    endpoint = UsageRecord.Endpoint.MESSAGES
    path = "/v1/messages"

    def serves(self, target: UpstreamTarget) -> bool:
        return True  # natively, or through the chat form every provider adapter speaks

    def native(self, target: UpstreamTarget) -> MessagesCodec | None:
        if target.kind == "anthropic" and "messages" in target.dialects:
            return CODEC
        return None

    async def render(self, call: Call, answer: dict[str, Any]) -> dict[str, Any]:
        native = answer.pop(NATIVE, None)
        choices = answer.get("choices") or [{}]
        choice = choices[0]
        finish = choice.get("finish_reason")
        usage = anthropic_usage(answer.get("usage") or {})
        if isinstance(native, dict):
            cut = finish == "length" and native.get("stop_reason") not in UPSTREAM_CAPPED
            if not cut:
                return {**native, "model": call.chat.model,
                        "usage": {**(native.get("usage") or {}), **usage}}
        return {"id": message_id(answer.get("id")), "type": "message", "role": "assistant",
                "model": call.chat.model,
                "content": content_from(choice.get("message") or {},
                                        thinking=wants_thinking(call)),
                "stop_reason": stop_reason(finish), "stop_sequence": None, "usage": usage}

    def stream(self, call: Call) -> MessagesStream:
        return MessagesStream(call)

    def error_response(self, error: ApiError) -> HttpResponse:
        return anthropic_error_response(error)


MESSAGES = MessagesDialect()
