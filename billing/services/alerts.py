"""Writes of a user's low-balance alert settings."""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from accounts.models import User
from billing.errors import InvalidAlert
from billing.models import BalanceAlert
from billing.services.webhook_targets import webhook_target_resolve


def balance_alert_set(*, user: User, threshold_micros: int | None, email: bool = True,
                      webhook_url: str = "") -> BalanceAlert | None:
    """Alert the user when their posted balance falls below ``threshold_micros``; None turns
    the alert off. The webhook secret, once made, is kept so receivers need not re-configure.
    A webhook URL must resolve to public addresses only (WebhookTargetRefused, an
    InvalidAlert, otherwise)."""
    if threshold_micros is None:
        BalanceAlert.objects.filter(user=user).delete()
        return None
    if threshold_micros <= 0:
        raise InvalidAlert("The alert threshold must be more than zero.")
    webhook_url = webhook_url.strip()
    if webhook_url:
        try:
            URLValidator(schemes=["https", "http"])(webhook_url)
        except ValidationError:
            raise InvalidAlert(f"{webhook_url!r} is not a web address.") from None
        # Checked again at each send (the name may resolve elsewhere by then); checked here
        # so that the user learns at once that an inside address will never be reached.
        webhook_target_resolve(url=webhook_url)
    if not email and not webhook_url:
        raise InvalidAlert("Choose email, a webhook, or both, for the alert.")
    with transaction.atomic():
        alert, _ = BalanceAlert.objects.select_for_update().get_or_create(
            user=user, defaults={"threshold_micros": threshold_micros})
        alert.threshold_micros = threshold_micros
        alert.email = email
        alert.webhook_url = webhook_url
        if webhook_url and not alert.webhook_secret:
            alert.webhook_secret = secrets.token_urlsafe(32)
        alert.save()
        return alert
