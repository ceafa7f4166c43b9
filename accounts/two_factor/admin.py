"""What the admin shows of staff's second-factor devices: who enrolled and when, never a
secret or a recovery code; no adding or editing (a device set up by someone else would
be a second factor its owner never had). Deleting one is the same as
``router staff reset-2fa``: its owner enrols again at their next sign-in."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.actors import Actor
from audit.services import AuditObject, audit_record_each

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

    # Deleting a device is a reset of its owner's second factor: on the audit trail, with
    # whose device it was and which kind, never its secret or codes.
    def delete_model(self, request: HttpRequest, obj: Device) -> None:
        self.delete_queryset(request, type(obj).objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        with transaction.atomic():
            devices = list(queryset.select_related("user"))
            audit_record_each(
                actor=Actor.of_request(request), action="user.second_factor_delete",
                changes=[(AuditObject(type=device._meta.label_lower, id=str(device.pk),
                                      label=f"{device._meta.verbose_name} of "
                                            f"{device.user.email}"),
                          {"user": device.user.email, "name": device.name}, None)
                         for device in devices])
            queryset.filter(pk__in=[device.pk for device in devices]).delete()


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
