from __future__ import annotations

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)  # None gives an unusable password: API-only users
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who logs in by email; staff run the admin, everyone may own API keys."""

    email = models.EmailField(max_length=254, unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Limits over all of the user's keys together; empty means unlimited.
    rpm = models.PositiveIntegerField("requests per minute", null=True, blank=True)
    tpm = models.PositiveIntegerField("tokens per minute", null=True, blank=True)
    max_concurrency = models.PositiveIntegerField("requests in flight", null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [
            # Case-insensitive uniqueness: Alice@x.com and alice@x.com are one person.
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = self.__class__.objects.normalize_email(self.email).lower()


class ApiKey(models.Model):
    """An API key. The secret itself is never stored: only its prefix and SHA-256 digest."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Policies of this key; empty means unlimited, or any model, or any address.
    rpm = models.PositiveIntegerField("requests per minute", null=True, blank=True)
    tpm = models.PositiveIntegerField("tokens per minute", null=True, blank=True)
    max_concurrency = models.PositiveIntegerField("requests in flight", null=True, blank=True)
    allowed_models = models.JSONField(default=list, blank=True,
                                      help_text='Model names this key may call, e.g. '
                                      '["gpt-4o-mini"]; empty: all.')
    allowed_ips = models.JSONField(default=list, blank=True,
                                   help_text='Client networks in CIDR form, e.g. '
                                   '["203.0.113.0/24"]; empty: any.')
    # A short-lived key the portal's playground mints for one signed-in session: billed and
    # limited like any key, kept out of the user's key lists, revoked on sign-out.
    playground = models.BooleanField(default=False, editable=False)
    # An organization's key spends the organization's wallet; ``user`` is the member who
    # owns it (their budget in the organization applies), or, for a service key, the admin
    # who created it (no member budget: the key's own caps and the wallet bound it).
    organization = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT,
                                     null=True, blank=True, related_name="api_keys")
    service = models.BooleanField(default=False, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(service=False) | Q(organization__isnull=False),
                                   name="accounts_apikey_service_keys_are_organizations"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})" if self.name else f"{self.prefix}…"

    def clean(self) -> None:
        super().clean()
        from django.core.exceptions import ValidationError

        from accounts.errors import AccountsError
        from accounts.policies import clean_allowed_ips, clean_allowed_models

        try:
            self.allowed_models = clean_allowed_models(self.allowed_models)
            self.allowed_ips = clean_allowed_ips(self.allowed_ips)
        except AccountsError as error:
            raise ValidationError(str(error)) from None

    def is_usable(self, now: timezone.datetime | None = None) -> bool:
        now = now or timezone.now()
        return (self.revoked_at is None and self.user.is_active
                and (self.expires_at is None or self.expires_at > now))

    @property
    def status(self) -> str:
        """"revoked", "expired" or "active", as the portal and the API show it."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ManagementToken(models.Model):
    """A token for the self-service REST API (/api), never for /v1: a different prefix and a
    different table, so neither kind of secret can stand in for the other. Stored like API
    keys: only the prefix and the SHA-256 digest."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="management_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})" if self.name else f"{self.prefix}…"
