"""Sign-in attempt limits, counted in Django's cache (Redis in production, so every router
instance counts the same failures; local memory in the embedded default).

Failures are counted per client address and per email address separately: the address
limit stops one machine guessing many accounts' passwords, the email limit stops many
machines guessing one account's password. A success clears the email's count, never the
address's, so an attacker cannot reset their own counter by signing in to their own account.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.core.cache import cache
from django.http import HttpRequest

MAX_FAILURES = 10
WINDOW_SECONDS = 15 * 60


def client_address(request: HttpRequest) -> str:
    # REMOTE_ADDR, not X-Forwarded-For: a header any client can set would let an attacker
    # pick a fresh "address" for every guess. Behind a proxy, have it set REMOTE_ADDR.
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _cache_key(scope: str, value: str) -> str:
    # Hashed: cache keys must be short and free of spaces and control characters, and an
    # email address has no business sitting in Redis in clear.
    return f"portal:signin-failures:{scope}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class SignInThrottle:
    address: str
    email: str

    @classmethod
    def for_request(cls, request: HttpRequest, email: str) -> SignInThrottle:
        return cls(address=client_address(request), email=email.strip().lower())

    def _keys(self) -> list[str]:
        keys = [_cache_key("ip", self.address)]
        if self.email:
            keys.append(_cache_key("email", self.email))
        return keys

    def blocked(self) -> bool:
        counts = cache.get_many(self._keys())
        return any(count >= MAX_FAILURES for count in counts.values())

    def record_failure(self) -> None:
        for key in self._keys():
            # add() starts the window on the first failure; incr() is atomic in Redis and
            # keeps the window's original expiry, so the limit is "10 within 15 minutes of
            # the first", not a window that slides forever.
            if not cache.add(key, 1, timeout=WINDOW_SECONDS):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add() and incr(): start again
                    cache.add(key, 1, timeout=WINDOW_SECONDS)

    def record_success(self) -> None:
        if self.email:
            cache.delete(_cache_key("email", self.email))
