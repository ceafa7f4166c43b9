"""Serializers shared by several endpoints: outputs that more than one view returns, the
error body, and the strict base of every input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from portal.api.fields import UsdField


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not declare. A client that sends ``user``, ``prefix`` or
    ``balance`` gets a 400 naming them, so nothing it meant to set is silently dropped and
    nothing it must not set is ever applied."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(name) for name in data if name not in writable)
            if unknown:
                allowed = ", ".join(sorted(writable))
                raise serializers.ValidationError({
                    name: [f"This field cannot be set. Fields you can set: {allowed}."]
                    for name in unknown})
        return super().to_internal_value(data)


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, in words.")
    type = serializers.CharField(help_text="invalid_request_error, authentication_error, "
                                 "permission_error, not_found_error or rate_limit_error.")
    code = serializers.CharField(help_text="A machine-readable reason, e.g. invalid, "
                                 "not_found, voucher_invalid, throttled.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="For invalid input: the messages about each field.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class BalanceSerializer(serializers.Serializer):
    posted_micros = serializers.IntegerField(help_text="Money in the wallet.")
    posted_usd = UsdField(source="posted_micros")
    held_micros = serializers.IntegerField(help_text="Reserved by requests in flight.")
    held_usd = UsdField(source="held_micros")
    available_micros = serializers.IntegerField(help_text="Posted minus held: what new "
                                                "requests can spend.")
    available_usd = UsdField(source="available_micros")
    spend_today_micros = serializers.IntegerField(help_text="Spent since 00:00 UTC.")
    spend_today_usd = UsdField(source="spend_today_micros")
    spend_month_micros = serializers.IntegerField(help_text="Spent this calendar month (UTC).")
    spend_month_usd = UsdField(source="spend_month_micros")
    requests_today = serializers.IntegerField()
