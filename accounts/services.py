"""Writes for users and API keys. Each function is one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.errors import AccountsError, ApiKeyNotFound, UserAlreadyExists
from accounts.keys import key_generate
from accounts.models import ApiKey, ManagementToken, User
from accounts.policies import clean_allowed_ips, clean_allowed_models
from accounts.tokens import token_generate
from audit.actors import Actor
from audit.services import audit_record
from audit.snapshots import Snapshot, snapshot
from billing.services.wallets import wallet_get_or_create

# What an API key is, for the audit trail: not last_used_at, which requests move. The digest
# is kept only as "set" / "changed" (audit.snapshots masks it by its name).
API_KEY_AUDIT_FIELDS = ("user", "name", "prefix", "digest", "expires_at", "revoked_at", "rpm",
                        "tpm", "max_concurrency", "allowed_models", "allowed_ips")


def user_create(
    *,
    email: str,
    password: str | None = None,
    name: str = "",
    is_staff: bool = False,
    is_superuser: bool = False,
    actor: Actor | None = None,
) -> User:
    """Create a user and their (empty) wallet, together; audited when an ``actor`` (staff,
    the CLI) creates it.

    Every account has a wallet from the moment it exists, so staff can find and credit a
    user who never paid; the sign-up, the admin's add form, the CLI and ``createsuperuser``
    all come through here."""
    email = User.objects.normalize_email(email.strip()).lower()
    try:
        validate_email(email)
    except ValidationError:
        raise AccountsError(f"{email!r} is not a valid email address.") from None
    if User.objects.filter(email=email).exists():
        raise UserAlreadyExists(f"A user with the email {email} already exists.")
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                email, password, name=name, is_staff=is_staff, is_superuser=is_superuser
            )
            wallet_get_or_create(user=user)
            if actor is not None:
                audit_record(actor=actor, action="user.create", obj=user, before=None,
                             after=user_audit_snapshot(user))
            return user
    except IntegrityError:
        # Lost a race with another creation of the same address: the unique index decided.
        raise UserAlreadyExists(f"A user with the email {email} already exists.") from None


def user_audit_snapshot(user: User) -> Snapshot:
    """A user's fields for the audit trail, with groups and permissions by name. The password
    is there as its hash only while it is usable, so the trail says "set" or "not set" (an
    API-only user's unusable one counts as not set), and "changed" when it was."""
    values = snapshot(user)
    values["password"] = user.password if user.has_usable_password() else ""
    values["groups"] = sorted(user.groups.values_list("name", flat=True))
    values["user_permissions"] = sorted(
        f"{app_label}.{codename}" for app_label, codename in
        user.user_permissions.values_list("content_type__app_label", "codename"))
    return values


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    secret: str  # shown once; nothing keeps it after this object is gone


def api_key_create(
    *,
    user: User,
    name: str = "",
    expires_at: datetime | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrency: int | None = None,
    allowed_models: list[str] | None = None,
    allowed_ips: list[str] | None = None,
    organization_id: int | None = None,
    service: bool = False,
    actor: Actor | None = None,
) -> CreatedApiKey:
    """Create a key; audited (never its secret) when an ``actor`` creates it. With an
    ``organization_id`` it spends that organization's wallet (``organizations.services``
    checks who may create it); ``service``: no member's budget applies."""
    _check_policy(expires_at=expires_at, rpm=rpm, tpm=tpm, max_concurrency=max_concurrency)
    generated = key_generate()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            user=user, name=name.strip()[:100], prefix=generated.prefix,
            digest=generated.digest, expires_at=expires_at, rpm=rpm, tpm=tpm,
            max_concurrency=max_concurrency, allowed_models=clean_allowed_models(allowed_models),
            allowed_ips=clean_allowed_ips(allowed_ips), organization_id=organization_id,
            service=service,
        )
        if actor is not None:
            audit_record(actor=actor, action="api_key.create", obj=api_key, before=None,
                         after=snapshot(api_key, fields=API_KEY_AUDIT_FIELDS))
    return CreatedApiKey(api_key=api_key, secret=generated.secret)


def api_key_update(
    *,
    api_key: ApiKey,
    name: str,
    expires_at: datetime | None,
    rpm: int | None,
    tpm: int | None,
    max_concurrency: int | None,
    allowed_models: list[str],
    allowed_ips: list[str],
    actor: Actor | None = None,
) -> ApiKey:
    """Change a key's name and policies (never its owner or secret). Other router instances
    see the change when their key cache entry lapses (ROUTER_LOOKUP_TTL_SECONDS). Audited
    with an ``actor``."""
    _check_policy(expires_at=expires_at, rpm=rpm, tpm=tpm, max_concurrency=max_concurrency,
                  unchanged_expiry=api_key.expires_at)
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if locked.revoked_at is not None:
            raise AccountsError("A revoked API key cannot be changed.")
        before = snapshot(locked, fields=API_KEY_AUDIT_FIELDS)
        locked.name = name.strip()[:100]
        locked.expires_at = expires_at
        locked.rpm, locked.tpm, locked.max_concurrency = rpm, tpm, max_concurrency
        locked.allowed_models = clean_allowed_models(allowed_models)
        locked.allowed_ips = clean_allowed_ips(allowed_ips)
        locked.save(update_fields=["name", "expires_at", "rpm", "tpm", "max_concurrency",
                                   "allowed_models", "allowed_ips"])
        if actor is not None:
            audit_record(actor=actor, action="api_key.change", obj=locked, before=before,
                         after=snapshot(locked, fields=API_KEY_AUDIT_FIELDS))
        return locked


def _check_policy(*, expires_at: datetime | None, rpm: int | None, tpm: int | None,
                  max_concurrency: int | None, unchanged_expiry: datetime | None = None) -> None:
    # An expiry already in the past may be kept as it is (the key stays expired), not set anew.
    if expires_at is not None and expires_at <= timezone.now() and expires_at != unchanged_expiry:
        raise AccountsError("An API key cannot expire in the past.")
    for label, limit in (("rpm", rpm), ("tpm", tpm), ("max concurrency", max_concurrency)):
        if limit is not None and not 1 <= limit <= 2_147_483_647:
            raise AccountsError(f"The {label} limit must be a positive whole number.")


def api_key_revoke(*, prefix: str, actor: Actor | None = None) -> ApiKey:
    """Revoke a key by its visible prefix. Revoking twice keeps the first revocation time.
    Audited with an ``actor``, once."""
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update().filter(prefix=prefix.strip()).first()
        if api_key is None:
            raise ApiKeyNotFound(f"No API key has the prefix {prefix!r}.")
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
            if actor is not None:
                audit_record(actor=actor, action="api_key.revoke", obj=api_key,
                             before={"revoked_at": None},
                             after={"revoked_at": api_key.revoked_at.isoformat()})
        return api_key


def api_key_touch(*, api_key: ApiKey, now: datetime | None = None) -> None:
    """Record that a key was used, at most once a minute per key.

    Writing on every request would turn each call into a row update that serialises on the
    key; a minute's resolution is all ``last_used_at`` promises.
    """
    now = now or timezone.now()
    if api_key.last_used_at is not None and (now - api_key.last_used_at).total_seconds() < 60:
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now


def api_keys_touch(*, api_keys: Sequence[ApiKey], now: datetime | None = None) -> None:
    """``api_key_touch`` for many keys: one UPDATE for those not touched in the last
    minute."""
    now = now or timezone.now()
    stale = [api_key for api_key in api_keys if api_key.last_used_at is None
             or (now - api_key.last_used_at).total_seconds() >= 60]
    if not stale:
        return
    ApiKey.objects.filter(pk__in=[api_key.pk for api_key in stale]).update(last_used_at=now)
    for api_key in stale:
        api_key.last_used_at = now


@dataclass(frozen=True)
class CreatedManagementToken:
    token: ManagementToken
    secret: str  # shown once; nothing keeps it after this object is gone


def management_token_create(*, user: User, name: str = "") -> CreatedManagementToken:
    if not user.is_active:
        raise AccountsError("An inactive user cannot have management tokens.")
    generated = token_generate()
    token = ManagementToken.objects.create(owner=user, name=name.strip()[:100],
                                           prefix=generated.prefix, digest=generated.digest)
    return CreatedManagementToken(token=token, secret=generated.secret)


def management_token_revoke(*, token: ManagementToken,
                            actor: Actor | None = None) -> ManagementToken:
    """Revoke a token; it stops working on the next request. Revoking twice keeps the first
    revocation time. Audited with an ``actor`` (staff revoking a user's token), once."""
    with transaction.atomic():
        locked = ManagementToken.objects.select_for_update().get(pk=token.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
            if actor is not None:
                audit_record(actor=actor, action="management_token.revoke", obj=locked,
                             before={"revoked_at": None},
                             after={"revoked_at": locked.revoked_at.isoformat()})
        return locked


def management_token_touch(*, token: ManagementToken, now: datetime | None = None) -> None:
    """Record that a token was used, at most once a minute (as api_key_touch, and why)."""
    now = now or timezone.now()
    if token.last_used_at is not None and (now - token.last_used_at).total_seconds() < 60:
        return
    ManagementToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
