"""POST /v1/embeddings: parsed into the one internal request, answered by the one path."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from proxy.dialects.embeddings.render import EMBEDDINGS
from proxy.dialects.embeddings.request import parse_embeddings_request
from proxy.entry.auth import authenticate
from proxy.entry.views import OpenAIView
from proxy.ground.errors import request_too_large
from proxy.relay import completion as relay


class EmbeddingsView(OpenAIView):
    async def post(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        caller = await authenticate(request)
        try:
            raw = request.body
        except RequestDataTooBig:
            raise request_too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) from None
        chat = parse_embeddings_request(raw)
        return await relay.chat_completion(request=request, caller=caller, chat=chat,
                                           dialect=EMBEDDINGS)
