"""What the admin shows of staff's second-factor devices: who enrolled and when, never a
secret or a recovery code; no adding or editing (a device set up by someone else would
be a second factor its owner never had). Deleting one is the same as
``router staff reset-2fa``: its owner enrols again at their next sign-in."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

_FIELDS = ["user", "name", "confirmed", "created_at", "last_used_at",
           "throttling_failure_count", "throttling_failure_timestamp"]


class _DeviceAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "confirmed", "created_at", "last_used_at",
                    "throttling_failure_count"]
    list_filter = ["confirmed"]
    search_fields = ["user__email"]
    list_select_related = ["user"]
    fields = _FIELDS
    readonly_fields = _FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AuthenticatorAdmin(_DeviceAdmin):
    pass


class RecoveryCodesAdmin(_DeviceAdmin):
    list_display = [*_DeviceAdmin.list_display, "codes_left"]
    fields = [*_FIELDS, "codes_left"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[StaticDevice]:
        return super().get_queryset(request).annotate(codes_left_count=Count("token_set"))

    @admin.display(description="codes left", ordering="codes_left_count")
    def codes_left(self, device: StaticDevice) -> int:
        return device.codes_left_count


def device_admins_register(site: AdminSite) -> None:
    """In place of django-otp's own admins, which let staff add a device (with its secret)
    for anyone."""
    for model, model_admin in ((TOTPDevice, AuthenticatorAdmin),
                               (StaticDevice, RecoveryCodesAdmin)):
        if site.is_registered(model):
            site.unregister(model)
        site.register(model, model_admin)
