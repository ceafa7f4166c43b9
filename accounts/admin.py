"""Staff views of users and API keys. Writes that carry rules go through accounts.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import (
    BaseUserCreationForm,
    SetUnusablePasswordMixin,
)
from django.contrib.auth.forms import (
    UserChangeForm as DjangoUserChangeForm,
)
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts import wallet_signals
from accounts.admin_user_page import UserWalletPanelMixin
from accounts.errors import ApiKeyNotFound
from accounts.models import ApiKey, ManagementToken, User
from accounts.services import (
    API_KEY_AUDIT_FIELDS,
    api_key_create,
    api_key_revoke,
    management_token_revoke,
    user_audit_snapshot,
)
from audit.actors import Actor
from audit.admin_base import AuditedAdmin
from audit.services import audit_record
from audit.snapshots import Snapshot, snapshot
from billing.services.wallets import wallet_get_or_create
from router_admin.admin_display import usd_cell

# The net under createsuperuser (see accounts.wallet_signals for why it is a signal). Here
# because the admin's modules are imported in every process (admin autodiscovery runs in
# django.setup()), and accounts/apps.py is not this change's to edit.
wallet_signals.connect()


def _email_taken(email: str, *, exclude_pk: int | None = None) -> bool:
    # The database's unique index is on lower(email); checking here turns what would be a
    # constraint violation into a form error that names the field.
    return User.objects.filter(email__iexact=email).exclude(pk=exclude_pk).exists()


class UserCreationForm(SetUnusablePasswordMixin, BaseUserCreationForm):
    """Create a user by email. A user without a password can still own API keys."""

    usable_password = SetUnusablePasswordMixin.create_usable_password_field()

    class Meta:
        model = User
        fields = ("email", "name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The password is optional when "password-based authentication" is switched off;
        # SetUnusablePasswordMixin.validate_passwords requires it otherwise.
        self.fields["password1"].required = False
        self.fields["password2"].required = False

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"].strip()).lower()
        if _email_taken(email):
            raise ValidationError("A user with this email already exists.", code="unique")
        return email


class UserChangeForm(DjangoUserChangeForm):
    class Meta:
        model = User
        fields = "__all__"

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"].strip()).lower()
        if _email_taken(email, exclude_pk=self.instance.pk):
            raise ValidationError("A user with this email already exists.", code="unique")
        return email


@admin.register(User)
class UserAdmin(UserWalletPanelMixin, AuditedAdmin, DjangoUserAdmin):
    audit_name = "user"
    form = UserChangeForm
    add_form = UserCreationForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("name",)}),
        ("Limits over all keys", {"fields": ("rpm", "tpm", "max_concurrency")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups",
                                    "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",),
                "fields": ("email", "name", "usable_password", "password1", "password2")}),
    )
    # Dates are the system's to write; shown as text they need no date/time widgets, whose
    # split inputs carry no label of their own (axe: critical). Groups and permissions as
    # plain labelled multi-selects: the two-box widget's help icons fail axe's ARIA rules.
    readonly_fields = ("last_login", "date_joined")
    filter_horizontal = ()
    list_display = ("email", "name", "is_staff", "is_active", "date_joined", "available_usd")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")
    search_fields = ("email", "name")
    ordering = ("email",)

    def audit_snapshot(self, obj: User) -> Snapshot:
        return user_audit_snapshot(obj)

    def save_model(self, request: HttpRequest, obj: User, form: forms.ModelForm,
                   change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            # Every user has a wallet from the start, as user_create makes it; Django's add
            # view runs this in its transaction, so the two commit together.
            wallet_get_or_create(user=obj)

    def user_change_password(self, request: HttpRequest, id: str,
                             form_url: str = "") -> HttpResponse:
        # Django's view saves the password in no transaction of its own: the new hash and
        # its audit row ("changed", never the hash) must commit together.
        with transaction.atomic():
            user = self.get_object(request, unquote(id))
            before = None if user is None else user_audit_snapshot(user)
            response = super().user_change_password(request, id, form_url)
            if user is not None:
                user.refresh_from_db()
                # Nothing is written for a GET or a refused form: nothing changed.
                audit_record(actor=Actor.of_request(request), action="user.password",
                             obj=user, before=before, after=user_audit_snapshot(user))
        return response

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        # One LEFT JOIN instead of a wallet query per row; users without a wallet have 0.
        # Display only: charging reads balances through billing's services, never this.
        return super().get_queryset(request).annotate(
            available_micros=Coalesce(
                F("wallet__posted_micros") - F("wallet__pending_micros"), Value(0)
            )
        )

    @admin.display(description="Available (USD)", ordering="available_micros")
    def available_usd(self, obj: User) -> str:
        return usd_cell(getattr(obj, "available_micros", 0) or 0)


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("user", "name", "expires_at")

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data.get("expires_at")
        # api_key_create refuses this too; asking first lets the form show the error
        # instead of failing after the admin has committed to saving.
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError("An API key cannot expire in the past.", code="past")
        return expires_at


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    audit_name = "api_key"
    audit_adds = False  # api_key_create audits the key it makes
    add_form = ApiKeyAddForm
    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at",
                    "expires_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at", "expires_at")
    list_select_related = ("user",)
    search_fields = ("prefix", "name", "user__email")
    autocomplete_fields = ("user",)
    actions = ("revoke_keys",)
    # The digest is in neither list: nothing staff do needs it, so it is never displayed.
    change_fields = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at",
                     "expires_at", "rpm", "tpm", "max_concurrency", "allowed_models",
                     "allowed_ips")
    change_readonly_fields = ("prefix", "user", "created_at", "last_used_at", "revoked_at")

    def audit_snapshot(self, obj: ApiKey) -> Snapshot:
        return snapshot(obj, fields=API_KEY_AUDIT_FIELDS)

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None,
                 **kwargs: Any) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return self.add_form.Meta.fields if obj is None else self.change_fields

    def get_readonly_fields(self, request: HttpRequest,
                            obj: ApiKey | None = None) -> tuple[str, ...]:
        return () if obj is None else self.change_readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm,
                   change: bool) -> None:
        if change:
            # Name, expiry and policies are editable here; prefix and digest are not fields.
            super().save_model(request, obj, form, change)
            return
        created = api_key_create(user=obj.user, name=obj.name, expires_at=obj.expires_at,
                                 actor=Actor.of_request(request))
        # The admin goes on to log and redirect to ``obj``: make it the row the service wrote.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created.api_key, field.attname))
        obj._state.adding = False
        obj._state.db = created.api_key._state.db
        # The only time the secret exists outside its owner's hands: kept on this request
        # object for response_add, never in a message (a cookie) or the session.
        request._new_api_key_secret = created.secret  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: ApiKey,
                     post_url_continue: str | None = None) -> HttpResponse:
        secret = getattr(request, "_new_api_key_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        response = TemplateResponse(request, "admin/accounts/apikey/created.html", {
            **self.admin_site.each_context(request), "opts": self.opts, "api_key": obj,
            "secret": secret, "title": f"API key {obj.prefix} created",
        })
        # The page must not be kept by a browser or a proxy cache (the admin's own
        # never_cache adds the rest of the header).
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for prefix in queryset.filter(revoked_at__isnull=True).values_list("prefix", flat=True):
            try:
                api_key_revoke(prefix=prefix, actor=Actor.of_request(request))
            except ApiKeyNotFound:
                continue  # deleted since the list was shown: nothing left to revoke
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key{'s' if revoked != 1 else ''}.",
                          messages.SUCCESS)


@admin.register(ManagementToken)
class ManagementTokenAdmin(AuditedAdmin):
    """Staff see and revoke users' /api tokens (a leaked one, say); only their owners create
    them, in the portal, because the secret is shown to whoever creates it."""

    audit_name = "management_token"

    list_display = ("prefix", "name", "owner", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    list_select_related = ("owner",)
    search_fields = ("prefix", "name", "owner__email")
    fields = ("prefix", "name", "owner", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke_tokens",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ManagementToken]) -> None:
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            management_token_revoke(token=token, actor=Actor.of_request(request))
        self.message_user(request, f"Revoked {len(tokens)} token{'s' if len(tokens) != 1 else ''}.",
                          messages.SUCCESS)
