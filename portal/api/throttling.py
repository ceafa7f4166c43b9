"""Rate limit of /api per user, counted in Django's cache (Redis in production, so every
router instance counts the same requests; local memory in the embedded default)."""

from __future__ import annotations

import time

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from portal.throttle import count_in_window

WINDOW_SECONDS = 60


class PerUserRateThrottle(BaseThrottle):
    """At most ``ROUTER_API_RATE_PER_MINUTE`` requests per user per clock minute, over all
    of the user's sessions and tokens: minting more tokens buys no more requests.

    A fixed window counted atomically (``portal.throttle.count_in_window``), so concurrent
    requests on several instances cannot all read the same count and slip through (DRF's
    own throttles read a list, append and write it back, which races).
    """

    def __init__(self) -> None:
        self._retry_after = 0.0

    def allow_request(self, request: Request, view: APIView) -> bool:
        if not request.user or not request.user.is_authenticated:
            return True  # refused by the permission check before it gets here
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"portal-api:rate:{request.user.pk}:{window}"
        # The entry outlives its window a little, so a slow clock on another instance
        # still finds it.
        count = count_in_window(key, WINDOW_SECONDS * 2)
        if count <= settings.ROUTER_API_RATE_PER_MINUTE:
            return True
        self._retry_after = (window + 1) * WINDOW_SECONDS - now
        return False

    def wait(self) -> float | None:
        return max(1.0, self._retry_after)
