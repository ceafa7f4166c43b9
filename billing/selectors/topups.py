"""Reads of top-ups: whether card payments are on, and a wallet's Checkout top-ups."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q, QuerySet

from accounts.models import User
from billing.errors import TopUpNotFound
from billing.models import CheckoutTopUp, Wallet


def stripe_topups_enabled() -> bool:
    """Both settings are needed: without the secret key no session can be created, and
    without the webhook secret a paid session could never be credited."""
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def topups_of(*, user: User | None = None, wallet: Wallet | None = None
              ) -> QuerySet[CheckoutTopUp]:
    """The Checkout top-ups of ``wallet`` (whoever paid them), or else of ``user``'s own
    wallet (not what they paid into an organization's), newest first. Which wallet a caller
    may read is theirs to check (``billing.selectors.receipts.wallet_of_viewer``)."""
    if wallet is not None:
        rows = CheckoutTopUp.objects.filter(wallet=wallet)
    else:
        rows = CheckoutTopUp.objects.filter(user=user).filter(
            Q(wallet__isnull=True) | Q(wallet__user=user))
    return rows.order_by("-id")


def topup_of(*, topup_id: int, user: User | None = None,
             wallet: Wallet | None = None) -> CheckoutTopUp:
    """One top-up of ``topups_of`` (same arguments); TopUpNotFound for any other id."""
    topup = topups_of(user=user, wallet=wallet).filter(pk=topup_id).first()
    if topup is None:
        raise TopUpNotFound("No such top-up.")
    return topup
