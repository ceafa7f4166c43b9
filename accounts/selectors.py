"""Reads for users and API keys."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import QuerySet
from django.utils import timezone

from accounts.errors import ApiKeyNotFound, ManagementTokenNotFound, UserNotFound
from accounts.keys import digests_match, key_digest, key_is_well_formed, key_prefix_of
from accounts.models import ApiKey, ManagementToken, User
from accounts.tokens import token_digest, token_is_well_formed, token_prefix_of


def users_with_email(*, email: str) -> QuerySet[User]:
    """The user (none or one) whose address is ``email``, in any case: addresses are stored
    normalised and lower-cased, so this reads the address's unique index."""
    return User.objects.filter(email=User.objects.normalize_email(email.strip()).lower())


def user_get_by_email(*, email: str) -> User:
    user = users_with_email(email=email).first()
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


def api_keys_authenticate(*, raw_keys: Sequence[str]) -> list[ApiKey | None]:
    """``api_key_authenticate`` for many keys in one query: a key (or None) per raw key,
    in order, by the same rules."""
    well_formed = [raw for raw in raw_keys if key_is_well_formed(raw)]
    by_prefix = {api_key.prefix: api_key for api_key in ApiKey.objects.select_related("user")
                 .filter(prefix__in={key_prefix_of(raw) for raw in well_formed})}
    now = timezone.now()
    found: list[ApiKey | None] = []
    for raw in raw_keys:
        api_key = by_prefix.get(key_prefix_of(raw)) if key_is_well_formed(raw) else None
        usable = (api_key is not None and digests_match(api_key.digest, key_digest(raw))
                  and api_key.is_usable(now))
        found.append(api_key if usable else None)
    return found


def api_keys_of(*, user: User) -> QuerySet[ApiKey]:
    """The user's keys, newest first, revoked ones included (they stay in the usage).
    Playground keys are not among them: the portal mints and revokes those itself, and
    their secret is never the user's to manage (accounts/playground.py); nor are keys of
    organizations, managed on the organization's pages."""
    return (ApiKey.objects.filter(user=user, playground=False, organization__isnull=True)
            .select_related("budget")
            .order_by("-created_at", "-pk"))


def api_key_of(*, user: User, key_id: int) -> ApiKey:
    """One of the user's own keys. Another user's key is as absent as a key that never was,
    so its existence cannot be probed."""
    api_key = api_keys_of(user=user).filter(pk=key_id).first()
    if api_key is None:
        raise ApiKeyNotFound("No such API key.")
    return api_key


def management_token_authenticate(*, raw_token: str) -> ManagementToken | None:
    """The live token that ``raw_token`` is, or None: malformed (an API key, say), unknown,
    revoked, or of an inactive user."""
    if not token_is_well_formed(raw_token):
        return None
    token = (ManagementToken.objects.select_related("owner")
             .filter(prefix=token_prefix_of(raw_token)).first())
    if token is None or not digests_match(token.digest, token_digest(raw_token)):
        return None
    if token.revoked_at is not None or not token.owner.is_active:
        return None
    return token


def management_tokens_of(*, user: User) -> QuerySet[ManagementToken]:
    """The user's management tokens, newest first, revoked ones included."""
    return ManagementToken.objects.filter(owner=user).order_by("-created_at", "-pk")


def management_token_of(*, user: User, token_id: int) -> ManagementToken:
    """One of the user's own tokens; another user's is as absent as one that never was."""
    token = management_tokens_of(user=user).filter(pk=token_id).first()
    if token is None:
        raise ManagementTokenNotFound("No such management token.")
    return token
