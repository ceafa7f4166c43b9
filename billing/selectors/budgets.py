"""Reads of API keys' spend caps."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import ApiKey
from billing.models import KeyBudget, MemberBudget, Wallet
from billing.models.budgets import SpendBudget
from billing.services.budgets import current_month


@dataclass(frozen=True)
class SpendCaps:
    """A key's caps in micro-USD; None is no cap."""

    lifetime_limit_micros: int | None = None
    monthly_limit_micros: int | None = None

    @property
    def any(self) -> bool:
        return self.lifetime_limit_micros is not None or self.monthly_limit_micros is not None


def key_spend_caps(*, api_key: ApiKey) -> SpendCaps:
    """The key's caps (a key without a budget row has none). Reads ``api_key.budget``, so
    select_related("budget") saves a query per key."""
    try:
        budget = api_key.budget
    except ApiKey.budget.RelatedObjectDoesNotExist:
        return SpendCaps()
    return SpendCaps(lifetime_limit_micros=budget.lifetime_limit_micros,
                     monthly_limit_micros=budget.monthly_limit_micros)


@dataclass(frozen=True)
class SpendingRoom:
    """What a request may still reserve, in micro-USD, by each limit on it; and what the
    requests in flight hold against each (when they settle, below their holds, room may
    come back)."""

    wallet_micros: int  # the available balance
    wallet_held_micros: int = 0
    key_lifetime_micros: int | None = None  # left under the key's lifetime cap; None: no cap
    key_monthly_micros: int | None = None  # left under its monthly cap this month
    key_held_micros: int = 0
    # The key owner's budget in the key's organization, the same way.
    member_lifetime_micros: int | None = None
    member_monthly_micros: int | None = None
    member_held_micros: int = 0

    def tightest(self) -> tuple[str, int, int]:
        """The limit with the least room: ("balance" | "lifetime" | "monthly" | "member
        lifetime" | "member monthly", room, held)."""
        limits = [("balance", self.wallet_micros, self.wallet_held_micros)]
        if self.key_lifetime_micros is not None:
            limits.append(("lifetime", self.key_lifetime_micros, self.key_held_micros))
        if self.key_monthly_micros is not None:
            limits.append(("monthly", self.key_monthly_micros, self.key_held_micros))
        if self.member_lifetime_micros is not None:
            limits.append(("member lifetime", self.member_lifetime_micros,
                           self.member_held_micros))
        if self.member_monthly_micros is not None:
            limits.append(("member monthly", self.member_monthly_micros,
                           self.member_held_micros))
        return min(limits, key=lambda limit: limit[1])


def spending_room_of(*, wallet_id: int, api_key_id: int | None) -> SpendingRoom:
    """The wallet, the key's caps and its owner's budget in its organization, as
    ``SpendingRoom`` (the same numbers as ``billing.services.hot_path.spending_room`` reads
    in one statement)."""
    wallet = Wallet.objects.filter(pk=wallet_id).values_list("posted_micros",
                                                             "pending_micros").first()
    posted, pending = wallet or (0, 0)
    key = (ApiKey.objects.filter(pk=api_key_id).values("organization_id", "user_id",
                                                       "service").first()
           if api_key_id is not None else None)
    budget = KeyBudget.objects.filter(api_key_id=api_key_id).first() if key else None
    member = (MemberBudget.objects.filter(organization_id=key["organization_id"],
                                          user_id=key["user_id"]).first()
              if key and key["organization_id"] and not key["service"] else None)
    key_lifetime, key_monthly = _room(budget)
    member_lifetime, member_monthly = _room(member)
    return SpendingRoom(posted - pending, pending, key_lifetime, key_monthly,
                        budget.pending_micros if budget else 0, member_lifetime,
                        member_monthly, member.pending_micros if member else 0)


def _room(budget: SpendBudget | None) -> tuple[int | None, int | None]:
    """What a budget's lifetime and monthly caps leave (None: no such cap)."""
    if budget is None:
        return None, None
    lifetime = monthly = None
    if budget.lifetime_limit_micros is not None:
        lifetime = budget.lifetime_limit_micros - budget.spent_micros - budget.pending_micros
    if budget.monthly_limit_micros is not None:
        spent = budget.month_spent_micros if budget.month == current_month() else 0
        monthly = budget.monthly_limit_micros - spent - budget.pending_micros
    return lifetime, monthly
