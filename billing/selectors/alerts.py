"""Reads of a user's low-balance alert."""

from __future__ import annotations

from accounts.models import User
from billing.models import BalanceAlert


def balance_alert_of(*, user: User) -> BalanceAlert | None:
    return BalanceAlert.objects.filter(user=user).first()
