"""POST /v1/completions: parsed into the one internal request, answered by the one path."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from proxy.dialects.completions.render import CompletionsDialect
from proxy.dialects.completions.request import LegacyRequest, parse_completions_request
from proxy.entry.auth import authenticate
from proxy.entry.views import OpenAIView
from proxy.ground.errors import bad_request, request_too_large
from proxy.relay import completion as relay
from proxy.selectors import Caller, targets_for_model


async def _check_native(legacy: LegacyRequest, caller: Caller) -> None:
    """A request only a native worker can take, for a model none of whose workers is one,
    is refused as the client's request (a 400 naming the field), before any money moves:
    otherwise the path would find no worker and answer 503, as if to try again later."""
    model = legacy.chat.model
    if legacy.needs_native is None or (caller.allowed_models
                                       and model not in caller.allowed_models):
        return  # a key not allowed the model is refused by the path, saying so
    targets = await targets_for_model(model)
    dialect = CompletionsDialect(legacy)
    if targets and not any(dialect.native(target) for target in targets):
        field = legacy.needs_native
        what = "several prompts in one request" if field == "prompt" else f"'{field}'"
        raise bad_request(f"The model `{model}` is served here through chat completions "
                          f"only, which cannot take {what}.", param=field,
                          code="unsupported_parameter")


class CompletionsView(OpenAIView):
    async def post(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        caller = await authenticate(request)
        try:
            raw = request.body
        except RequestDataTooBig:
            raise request_too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) from None
        legacy = parse_completions_request(raw)
        await _check_native(legacy, caller)
        return await relay.chat_completion(request=request, caller=caller, chat=legacy.chat,
                                           dialect=CompletionsDialect(legacy))
