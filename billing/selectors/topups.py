"""Reads of top-ups: whether card payments are on, and a user's Checkout top-ups."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from accounts.models import User
from billing.errors import TopUpNotFound
from billing.models import CheckoutTopUp


def stripe_topups_enabled() -> bool:
    """Both settings are needed: without the secret key no session can be created, and
    without the webhook secret a paid session could never be credited."""
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def topups_of(*, user: User) -> QuerySet[CheckoutTopUp]:
    """The user's Checkout top-ups, newest first."""
    return CheckoutTopUp.objects.filter(user=user).order_by("-id")


def topup_of(*, user: User, topup_id: int) -> CheckoutTopUp:
    """One of the user's own Checkout top-ups; TopUpNotFound for any other id."""
    topup = topups_of(user=user).filter(pk=topup_id).first()
    if topup is None:
        raise TopUpNotFound("No such top-up.")
    return topup
