"""Reads for users and API keys."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from accounts.errors import ApiKeyNotFound, UserNotFound
from accounts.keys import digests_match, key_digest, key_is_well_formed, key_prefix_of
from accounts.models import ApiKey, User


def user_get_by_email(*, email: str) -> User:
    user = User.objects.filter(email=User.objects.normalize_email(email.strip()).lower()).first()
    if user is None:
        raise UserNotFound(f"No user has the email {email.strip()!r}.")
    return user


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The usable key that ``raw_key`` is, or None: malformed, unknown, revoked or expired."""
    if not key_is_well_formed(raw_key):
        return None
    api_key = (
        ApiKey.objects.select_related("user").filter(prefix=key_prefix_of(raw_key)).first()
    )
    if api_key is None or not digests_match(api_key.digest, key_digest(raw_key)):
        return None
    if not api_key.is_usable(timezone.now()):
        return None
    return api_key


def api_keys_of(*, user: User) -> QuerySet[ApiKey]:
    """The user's keys, newest first, revoked ones included (they stay in the usage)."""
    return ApiKey.objects.filter(user=user).select_related("budget").order_by("-created_at",
                                                                              "-pk")


def api_key_of(*, user: User, key_id: int) -> ApiKey:
    """One of the user's own keys. Another user's key is as absent as a key that never was,
    so its existence cannot be probed."""
    api_key = api_keys_of(user=user).filter(pk=key_id).first()
    if api_key is None:
        raise ApiKeyNotFound("No such API key.")
    return api_key
