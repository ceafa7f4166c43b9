"""The Responses dialect: a ``response`` object (or its event stream) from the internal
chat answer, whose usage is exactly what was charged.

One dialect object per request: it carries the parsed request (its ``resp_`` id, what to
echo) and the stored context it replayed, which ``ChatRequest`` has no place for.

To an OpenAI-compatible worker that lists ``responses`` among its native dialects the
request goes natively (``proxy.dialects.responses.native``); its whole answer shows the
upstream's own output items (their ids included) in the router's response (its ``resp_``
id, so that the router's store and ``GET`` know it, the client's model name, the usage
that was charged), unless the meter cut it at the router's cap, when it is built from the
internal form as a translated answer is. Streams are always written by the router from
the internal chunks (``stream.py``): the events are equivalent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from django.http import HttpResponse

from billing.models import UsageRecord
from proxy.dialects.base import NATIVE
from proxy.dialects.responses import shape
from proxy.dialects.responses.native import ResponsesCodec
from proxy.dialects.responses.request import ResponsesRequest
from proxy.dialects.responses.store import response_save
from proxy.dialects.responses.stream import ResponsesStream
from proxy.ground.errors import ApiError
from proxy.ground.responses import error_response

if TYPE_CHECKING:
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget


class ResponsesDialect:
    endpoint = UsageRecord.Endpoint.RESPONSES
    path = "/v1/responses"

    def __init__(self, request: ResponsesRequest, previous: list[dict[str, Any]]) -> None:
        self.request = request
        self.previous = previous  # the stored context replayed before the new input
        self.created_at = int(time.time())

    def serves(self, target: UpstreamTarget) -> bool:
        return True  # natively, or translated to chat, which every provider adapter speaks

    def native(self, target: UpstreamTarget) -> ResponsesCodec | None:
        if target.kind == "openai" and "responses" in target.dialects:
            return ResponsesCodec(self)
        return None

    def skeleton(self) -> dict[str, Any]:
        return shape.skeleton(self.request, self.created_at)

    async def render(self, call: Call, answer: dict[str, Any]) -> dict[str, Any]:
        native = answer.pop(NATIVE, None)
        choices = answer.get("choices") or [{}]
        message = choices[0].get("message") or {}
        finish_reason = choices[0].get("finish_reason")
        if isinstance(native, dict) and not call.meter.over_cap:
            response = shape.finish_native(self.skeleton(), native, finish_reason,
                                           answer["usage"])
        else:
            response = shape.finish(self.skeleton(), finish_reason,
                                    shape.output_items(message, finish_reason),
                                    answer["usage"])
        await self.keep(call, response)
        return response

    async def keep(self, call: Call, response: dict[str, Any]) -> None:
        """Store a finished response when the client asked (the default). Awaited before
        the client hears the response ended, so that its next request may name it; its
        charge is settled (or on its way) already, so this never holds money."""
        if not self.request.store:
            return
        messages = [*self.previous, *self.request.messages,
                    shape.assistant_message(response["output"])]
        await response_save(response_id=self.request.id, user_id=call.caller.user_id,
                            api_key_id=call.caller.api_key_id, model=self.request.model,
                            messages=messages, response=response)

    def stream(self, call: Call) -> ResponsesStream:
        return ResponsesStream(self, call)

    def error_response(self, error: ApiError) -> HttpResponse:
        return error_response(error)  # Responses errors are OpenAI's usual shape
