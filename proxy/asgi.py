"""A Django ASGI handler for /v1 with its own, async-only middleware.

The site's MIDDLEWARE (sessions, CSRF, messages, ...) is built from sync-capable classes;
in an async handler each of them runs through ``sync_to_async`` on one shared thread, which
would serialise every API request through that thread. The API needs none of them.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string


class ApiASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        # The view is not wrapped: its exceptions reach RequestIdMiddleware, which logs them
        # with the request id and answers in OpenAI's format instead of Django's 500 page.
        handler = self._get_response_async
        for path in reversed(settings.ROUTER_API_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = handler
