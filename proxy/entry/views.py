"""The /v1 API: thin async views over ``proxy.relay.completion`` and the cached selectors."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from adrf.views import APIView
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from proxy.dialects.chat.request import parse_chat_request
from proxy.entry.auth import authenticate
from proxy.entry.catalogue import model_object
from proxy.ground.errors import ApiError, method_not_allowed, model_not_found, request_too_large
from proxy.ground.responses import error_response, json_response
from proxy.relay import completion as relay
from proxy.selectors import routable_prices


class OpenAIView(APIView):
    """An adrf view that answers in OpenAI's format from start to finish.

    DRF's ``initial()`` (authenticators, permissions, throttles, content negotiation) is
    skipped: it would run in a thread on every request, and this API authenticates with an
    async cached key lookup and only speaks JSON. Errors are ``ApiError``s, rendered here.
    """

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    # How this view's clients read an error (a dialect with its own shape overrides it).
    render_error = staticmethod(error_response)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any
                 ) -> Coroutine[Any, Any, HttpResponse | StreamingHttpResponse]:
        # adrf's dispatch picks sync or async by ``view_is_async``, a class property that
        # inspects every handler on each request; these views are async by construction
        # (test_views checks it once).
        return self.async_dispatch(request, *args, **kwargs)

    async def async_dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any
                             ) -> HttpResponse | StreamingHttpResponse:
        self.args, self.kwargs, self.request = args, kwargs, request
        method = request.method.lower() if request.method else ""
        handler = getattr(self, method, None) if method in self.http_method_names else None
        try:
            if handler is None or method == "options":
                raise method_not_allowed(request.method or "", request.path)
            return await handler(request, *args, **kwargs)
        except ApiError as error:
            response = self.render_error(error)
            if error.status == 405:
                response["Allow"] = ", ".join(m.upper() for m in self._allowed_methods()
                                              if m != "OPTIONS")
            # Answered: what raised the error is of no more use. Its traceback holds every
            # frame of the request and its context the refusal it was raised from, which may
            # hold the error itself (proxy.money.Refused): a cycle, one per refused request,
            # that only the garbage collector would free, stopping every request meanwhile.
            error.__traceback__ = None
            error.__context__ = None
            return response


class ChatCompletionsView(OpenAIView):
    async def post(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        caller = await authenticate(request)
        try:
            raw = request.body
        except RequestDataTooBig:
            raise request_too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) from None
        chat = parse_chat_request(raw)
        return await relay.chat_completion(request=request, caller=caller, chat=chat)


class ModelListView(OpenAIView):
    async def get(self, request: HttpRequest) -> HttpResponse:
        await authenticate(request)
        prices = await routable_prices()
        return json_response({"object": "list",
                                    "data": [model_object(p) for p in prices]})


class ModelDetailView(OpenAIView):
    async def get(self, request: HttpRequest, model: str) -> HttpResponse:
        await authenticate(request)
        prices = await routable_prices()
        for price in prices:
            if price.model == model:
                return json_response(model_object(price))
        raise model_not_found(model)


async def unknown_route(request: HttpRequest, rest: str = "") -> HttpResponse:
    from proxy.ground.errors import route_not_found

    return error_response(route_not_found(request.method or "", request.path))
