"""The portal playground's key: one short-lived API key per signed-in session.

The playground calls the real ``/v1`` path, so it is billed, limited and recorded like any
other client; it needs a real key for that. The key is minted on the first use in a session
and kept for that session only: its id and its secret, encrypted with the router's Fernet
keys (``proxy.crypto``) so a session row read from the database does not hand out a live
key. It is flagged ``playground`` (kept out of the key lists, shown as such in the usage),
expires by itself after ``PLAYGROUND_KEY_LIFETIME`` and is revoked on sign-out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_create, api_key_revoke
from billing.selectors import prices_current
from proxy.crypto import decrypt_secret, encrypt_secret
from proxy.models import WorkerModel

PLAYGROUND_KEY_NAME = "playground"
PLAYGROUND_KEY_LIFETIME = timedelta(hours=12)
# A key this close to its expiry is replaced rather than handed out: a chat started with it
# should not be refused halfway through a conversation.
_RENEW_BEFORE = timedelta(minutes=10)
SESSION_KEY = "playground_key"


def playground_key_for(request: HttpRequest) -> str:
    """The secret of this session's playground key, minted if the session has none usable
    (none yet, expired, near expiry, or revoked elsewhere, e.g. by staff)."""
    user = request.user
    assert isinstance(user, User), "the playground needs a signed-in user"
    stored = _stored_key(request, user)
    if stored is not None:
        return stored
    _revoke_session_key(request)  # the one it replaces, if any, is of no further use
    expires_at = timezone.now() + PLAYGROUND_KEY_LIFETIME
    with transaction.atomic():
        created = api_key_create(user=user, name=PLAYGROUND_KEY_NAME, expires_at=expires_at)
        ApiKey.objects.filter(pk=created.api_key.pk).update(playground=True)
    request.session[SESSION_KEY] = {"id": created.api_key.pk,
                                    "secret": encrypt_secret(created.secret)}
    return created.secret


def _stored_key(request: HttpRequest, user: User) -> str | None:
    entry: Any = request.session.get(SESSION_KEY)
    if not isinstance(entry, dict):
        return None
    api_key = ApiKey.objects.filter(pk=entry.get("id"), user=user, playground=True).first()
    if (api_key is None or not api_key.is_usable()
            or api_key.expires_at is None
            or api_key.expires_at - _RENEW_BEFORE <= timezone.now()):
        return None
    try:
        return decrypt_secret(str(entry.get("secret", "")))
    except InvalidToken:  # the encryption keys were rotated away: mint a new key
        return None


def _revoke_session_key(request: HttpRequest) -> None:
    entry: Any = request.session.pop(SESSION_KEY, None)
    if not isinstance(entry, dict):
        return
    api_key = ApiKey.objects.filter(pk=entry.get("id"), playground=True,
                                    revoked_at__isnull=True).first()
    if api_key is not None:
        api_key_revoke(prefix=api_key.prefix)


@receiver(user_logged_out, dispatch_uid="accounts.playground.revoke_on_logout")
def revoke_playground_key_on_logout(sender: type, request: HttpRequest | None,
                                    **kwargs: Any) -> None:
    """Sign-out ends the key with the session. Django sends this signal before it flushes
    the session, so the session still names the key here."""
    if request is not None and hasattr(request, "session"):
        _revoke_session_key(request)


def playground_models() -> list[str]:
    """The models a playground key may call: priced and served by an enabled worker, as
    /v1/models lists them (a playground key has no allow-list of its own)."""
    served = set(WorkerModel.objects.filter(worker__enabled=True)
                 .values_list("model", flat=True))
    return sorted(price.model for price in prices_current() if price.model in served)
