"""Limits on sign-in attempts, sign-ups and password-reset emails, counted in Django's cache
(Redis in production, so every router instance counts the same; local memory in the
embedded default).

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


def count_in_window(key: str, window_seconds: int) -> int:
    """Count one event under ``key``; returns the count so far in its window.

    add() starts the window on the first event; incr() is atomic in Redis and keeps the
    window's original expiry, so a limit means "N within the window from the first", not a
    window that slides for ever, and instances counting at once cannot lose an event.
    """
    if cache.add(key, 1, timeout=window_seconds):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr(): start again
        cache.add(key, 1, timeout=window_seconds)
        return 1


@dataclass(frozen=True)
class Quota:
    """At most ``limit`` of one action per value (a client address, an email) within
    ``window_seconds`` of the first. Checked, then counted: two racing requests may both
    pass the last free place, which a limit against floods can afford."""

    scope: str
    limit: int
    window_seconds: int

    def take(self, *values: str) -> bool:
        """Count one action for every value; False (counting nothing) once any is spent."""
        keys = [_cache_key(self.scope, value) for value in values if value]
        if any(count >= self.limit for count in cache.get_many(keys).values()):
            return False
        for key in keys:
            count_in_window(key, self.window_seconds)
        return True


# Accounts made from one address, and reset emails asked for by one address or sent to one
# mailbox: enough for people, too few to flood an inbox or fill the user table.
SIGN_UPS_PER_ADDRESS = Quota("signup-ip", limit=10, window_seconds=3600)
RESET_EMAILS_PER_ADDRESS = Quota("reset-ip", limit=10, window_seconds=3600)
RESET_EMAILS_PER_MAILBOX = Quota("reset-email", limit=3, window_seconds=3600)


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
            count_in_window(key, WINDOW_SECONDS)

    def record_success(self) -> None:
        if self.email:
            cache.delete(_cache_key("email", self.email))
