"""Upstream secrets are encrypted at rest with Fernet keys from ROUTER_ENCRYPTION_KEYS.

The first key encrypts; every key decrypts, so keys can be rotated by prepending a new one.
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "ROUTER_ENCRYPTION_KEYS must be comma-separated Fernet keys "
            "(32 url-safe base64-encoded bytes each)."
        ) from None


def encrypt_secret(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _fernet(tuple(settings.ROUTER_ENCRYPTION_KEYS)).encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet(tuple(settings.ROUTER_ENCRYPTION_KEYS)).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "An upstream secret cannot be decrypted with ROUTER_ENCRYPTION_KEYS; was the key "
            "rotated without keeping the old one?"
        ) from None
