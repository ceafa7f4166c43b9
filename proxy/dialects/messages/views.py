"""Anthropic's Messages API: ``POST /v1/messages`` on the one billed path, and
``POST /v1/messages/count_tokens`` (counted, never charged). Every error, from the key's
check to the upstream's failure, is answered in Anthropic's shape."""

from __future__ import annotations

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from proxy.dialects.messages.errors import anthropic_error_response
from proxy.dialects.messages.render import MESSAGES
from proxy.dialects.messages.request import parse_messages_request
from proxy.entry.auth import authenticate_api_key_header
from proxy.entry.views import OpenAIView
from proxy.ground.errors import (
    model_not_found,
    permission_denied,
    request_too_large,
    route_not_found,
)
from proxy.ground.responses import json_response
from proxy.ground.tokens import count_text_tokens, exact_prompt_tokens
from proxy.relay import completion as relay
from proxy.selectors import price_for_model


def _body(request: HttpRequest) -> bytes:
    try:
        return request.body
    except RequestDataTooBig:
        raise request_too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) from None


class AnthropicView(OpenAIView):
    """OpenAIView's dispatch, with errors in Anthropic's shape."""

    render_error = staticmethod(anthropic_error_response)


class MessagesView(AnthropicView):
    async def post(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        caller = await authenticate_api_key_header(request)
        chat = parse_messages_request(_body(request), request.META)
        return await relay.chat_completion(request=request, caller=caller, chat=chat,
                                           dialect=MESSAGES)


class CountTokensView(AnthropicView):
    async def post(self, request: HttpRequest) -> HttpResponse:
        caller = await authenticate_api_key_header(request)
        chat = parse_messages_request(_body(request), request.META, count_only=True)
        if caller.allowed_models and chat.model not in caller.allowed_models:
            raise permission_denied(f"This API key may not use the model `{chat.model}`.")
        if await price_for_model(chat.model) is None:
            raise model_not_found(chat.model)
        # Counted as the router counts a prompt it charges for when the upstream does not
        # say: the messages the way OpenAI counts them, and each tool's definition.
        tokens = exact_prompt_tokens(chat.messages) + sum(
            count_text_tokens(orjson.dumps(tool).decode()) for tool in chat.body.get("tools") or ())
        return json_response({"input_tokens": tokens})


async def unknown_messages_route(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Anything else under /v1/messages/ is a 404 its (Anthropic) clients can read."""
    return anthropic_error_response(route_not_found(request.method or "", request.path))
