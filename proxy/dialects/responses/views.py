"""The Responses API: ``POST /v1/responses`` on the one billed path, the token count, and
the stored responses of the caller."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from proxy.dialects.body import json_body
from proxy.dialects.responses.render import ResponsesDialect
from proxy.dialects.responses.request import (
    ResponsesRequest,
    parse_body,
    parse_responses_request,
)
from proxy.dialects.responses.store import response_delete, stored_context, stored_response
from proxy.entry.auth import authenticate
from proxy.entry.views import OpenAIView
from proxy.ground.errors import request_too_large
from proxy.ground.responses import json_response
from proxy.ground.tokens import count_text_tokens, exact_prompt_tokens
from proxy.relay import completion as relay
from proxy.selectors import Caller


def _raw(request: HttpRequest) -> bytes:
    try:
        return request.body
    except RequestDataTooBig:
        raise request_too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) from None


async def _previous(parsed: ResponsesRequest, caller: Caller) -> list[dict[str, Any]]:
    if parsed.previous_response_id is None:
        return []
    return await stored_context(response_id=parsed.previous_response_id,
                                user_id=caller.user_id)


class ResponsesView(OpenAIView):
    async def post(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        caller = await authenticate(request)
        parsed = parse_responses_request(_raw(request))
        previous = await _previous(parsed, caller)
        return await relay.chat_completion(request=request, caller=caller,
                                           chat=parsed.chat_request(previous),
                                           dialect=ResponsesDialect(parsed, previous))


class ResponseInputTokensView(OpenAIView):
    """What the input of a Responses request counts, not charged: its messages (with the
    instructions and the stored context) as the router counts chat prompts, plus the
    text of its tool definitions and JSON schema, which the upstream puts in the prompt."""

    async def post(self, request: HttpRequest) -> HttpResponse:
        caller = await authenticate(request)
        body = json_body(_raw(request))
        model = body.get("model")
        parsed = parse_body(body, model if isinstance(model, str) else "")
        previous = await _previous(parsed, caller)
        chat = parsed.chat_request(previous)
        tokens = exact_prompt_tokens(chat.messages)
        for name in ("tools", "response_format"):
            if chat.body.get(name) is not None:
                tokens += count_text_tokens(orjson.dumps(chat.body[name]).decode())
        return json_response({"object": "response.input_tokens", "input_tokens": tokens})


class ResponseDetailView(OpenAIView):
    async def get(self, request: HttpRequest, response_id: str) -> HttpResponse:
        caller = await authenticate(request)
        return json_response(await stored_response(response_id=response_id,
                                                   user_id=caller.user_id))

    async def delete(self, request: HttpRequest, response_id: str) -> HttpResponse:
        caller = await authenticate(request)
        await response_delete(response_id=response_id, user_id=caller.user_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})
